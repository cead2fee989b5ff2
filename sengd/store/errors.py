"""Errors raised by the store. Each names what was wrong so that an operator can act on it."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class SchemaError(StoreError):
    """The database schema is not the one this software expects."""


class UpgradeRequired(SchemaError):
    """The database is older than this software and automatic upgrades are forbidden."""


class SchemaTooNew(SchemaError):
    """The database was upgraded by a newer release than this one; refusing to touch it."""


class InvalidSubnet(StoreError, ValueError):
    """An enclave subnet that cannot be used: bad prefix length, gateway outside, overlap."""


class UnsupportedPrefix(InvalidSubnet):
    """An enclave subnet prefix outside /8 ... /30 (a /31 or /32 has no address to hand out)."""


class UnknownSubnet(StoreError, LookupError):
    """No enclave subnet with that id."""


class UnknownLease(StoreError, LookupError):
    """No open lease with that id."""


class PoolExhausted(StoreError):
    """Every assignable address of an enclave subnet is leased."""


class DatabaseError(StoreError):
    """The database failed or refused an operation (connection lost, constraint violated)."""


class LegacyImportError(StoreError):
    """A file that is not an original SENG database (or not readable as one)."""
