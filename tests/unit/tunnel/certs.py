"""Self-signed test certificates made with `cryptography` (real keys, real signatures)."""

from __future__ import annotations

import datetime as dt
import os
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sengd.testing.enclave_emu import ClientIdentity
from sengd.tunnel.dtls import ServerCredential

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def make_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    return ec.generate_private_key(ec.SECP384R1())


def make_cert(key: PrivateKey, cn: str, *, padding: int = 0) -> x509.Certificate:
    """A self-signed certificate; `padding` bytes of opaque extensions inflate it (RA-TLS-like)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
    )
    oid_index = 2
    while padding > 0:
        chunk = min(padding, 2000)
        value = os.urandom(chunk * 3 // 4 + 1).hex().encode()[:chunk]
        builder = builder.add_extension(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(f"1.2.840.113741.1337.{oid_index}"), value
            ),
            critical=False,
        )
        padding -= chunk
        oid_index += 1
    return builder.sign(key, hashes.SHA256())


@cache
def server_credential(kind: str) -> ServerCredential:
    key = make_key("rsa3072" if kind == "rsa" else "p384")
    cert = make_cert(key, f"seng gateway {kind}")
    return ServerCredential.from_bytes(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


@cache
def client_identity(kind: str, padding: int = 0, cn: str = "enclave") -> ClientIdentity:
    key = make_key("rsa" if kind == "rsa" else "p384")
    return ClientIdentity.from_certificate(make_cert(key, cn, padding=padding), key)
