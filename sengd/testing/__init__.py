"""Test support for seng-gateway: importable by tests, benchmarks and the enclave emulator.

The daemon never imports this package (a unit test enforces it): nothing here is trusted.
"""
