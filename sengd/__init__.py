"""seng-gateway daemon: the SGX-Enforcing Network Gateway."""

__version__ = "0.1.0"
