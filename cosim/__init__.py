"""qkdlink.cosim"""
