"""Registers the `bitstream` marker: tests that run the YoWASP Yosys/nextpnr flow."""


def pytest_configure(config):
    config.addinivalue_line("markers", "bitstream: runs Yosys + nextpnr through YoWASP (a minute or more each)")
