"""qkdlink.host"""
