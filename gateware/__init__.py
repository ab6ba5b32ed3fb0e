"""qkdlink.gateware"""
