"""qkdlink.hdl"""
