"""Smoke test of a built seng-gateway environment: every native module loads and does real work.

Run with the environment's own interpreter (debian/rules runs it on the staged environment
before and after stripping; tests/packaging runs it on the installed package):

    /usr/lib/seng-gateway/venv/bin/python smoke.py

Prints one line per check and exits 0, or raises on the first failure.
"""

from __future__ import annotations

import hashlib


def check_mbedtls() -> str:
    import mbedtls
    import mbedtls.hashlib
    import mbedtls.tls
    import mbedtls.x509

    digest = mbedtls.hashlib.sha256(b"seng").hexdigest()
    assert digest == hashlib.sha256(b"seng").hexdigest(), "mbedtls sha256 differs"
    assert mbedtls.tls.DTLSConfiguration is not None
    return f"mbed TLS {mbedtls.version.version}"


def check_cryptography() -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    signature = key.sign(b"seng", ec.ECDSA(hashes.SHA384()))
    key.public_key().verify(signature, b"seng", ec.ECDSA(hashes.SHA384()))
    import cryptography

    return f"cryptography {cryptography.__version__} (P-384 sign/verify)"


def check_pytun() -> str:
    import pytun

    assert pytun.IFF_TUN and pytun.IFF_NO_PI
    return "pytun"


def check_sqlalchemy() -> str:
    import sqlalchemy
    from sqlalchemy import create_engine, text

    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        assert conn.execute(text("select 41 + 1")).scalar_one() == 42
    engine.dispose()
    return f"SQLAlchemy {sqlalchemy.__version__} (SQLite)"


def check_psycopg() -> str:
    import psycopg

    assert psycopg.pq.__impl__ == "binary", f"psycopg uses the {psycopg.pq.__impl__} libpq"
    return f"psycopg {psycopg.__version__} (binary, libpq {psycopg.pq.version()})"


def check_protobuf() -> str:
    from google.protobuf.internal import api_implementation

    return f"protobuf ({api_implementation.Type()})"


def check_other_native() -> str:
    import _cffi_backend
    import markupsafe._speedups

    assert _cffi_backend.__version__
    assert markupsafe._speedups._escape_inner("<") == "&lt;"
    return "cffi, markupsafe"


def check_seng() -> str:
    import sengadm.cli
    import sengd.daemon
    from sengd import __version__

    assert sengd.daemon and sengadm.cli
    return f"sengd {__version__}"


CHECKS = (
    check_mbedtls,
    check_cryptography,
    check_pytun,
    check_sqlalchemy,
    check_psycopg,
    check_protobuf,
    check_other_native,
    check_seng,
)


def main() -> int:
    """Run every check; an exception is a failure."""
    for check in CHECKS:
        print(f"smoke: {check()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
