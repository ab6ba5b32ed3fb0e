"""qkdlink.boards"""
