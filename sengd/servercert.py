"""The gateway's own DTLS server certificates, which the SENG clients pin.

Two kinds serve the two client builds (PROTOCOL.md §1.2, §2): an ECDSA pair for the suite
ECDHE-ECDSA-AES128-GCM-SHA256 and an RSA pair for ECDHE-RSA-AES256-GCM-SHA384. Configured pairs
are loaded and checked (key matches certificate, usable key type, validity). With none
configured and `generate_if_missing` on, an ECDSA P-384 self-signed pair is generated once, like
`openssl req -x509 -newkey ec` would (CA:TRUE, so OpenSSL accepts it as the clients' trust
anchor), and kept for later starts: the clients pin it, so it must not change.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from sengd.config import TunnelSection
from sengd.eventlog import emit

log = logging.getLogger(__name__)

GENERATED_CERT = "server-ecdsa.crt"
GENERATED_KEY = "server-ecdsa.key"
GENERATED_VALIDITY = dt.timedelta(days=3650)
EXPIRY_WARNING = dt.timedelta(days=30)


class ServerCertError(Exception):
    """A server certificate or key is missing, unreadable or unusable (message names the file)."""


@dataclass(frozen=True, slots=True)
class ServerKeyPair:
    """One certificate and its private key, PEM-encoded, with what operators need to pin it."""

    kind: str  # "ecdsa" or "rsa"
    certificate_pem: bytes
    private_key_pem: bytes
    certificate_path: Path
    fingerprint_sha256: str  # of the DER certificate, colon-free lowercase hex
    not_after: dt.datetime


def load_credentials(tunnel: TunnelSection, now: dt.datetime) -> list[ServerKeyPair]:
    """The configured pairs (ECDSA first), or the generated ECDSA pair when none is configured."""
    creds: list[ServerKeyPair] = []
    if tunnel.ecdsa_certificate is not None and tunnel.ecdsa_private_key is not None:
        creds.append(load_pair("ecdsa", tunnel.ecdsa_certificate, tunnel.ecdsa_private_key, now))
    if tunnel.rsa_certificate is not None and tunnel.rsa_private_key is not None:
        creds.append(load_pair("rsa", tunnel.rsa_certificate, tunnel.rsa_private_key, now))
    if not creds:
        if not tunnel.generate_if_missing:  # config validation normally catches this first
            raise ServerCertError("no server certificate configured")
        creds.append(ensure_generated(tunnel.generated_dir, now))
    return creds


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerCertError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def load_pair(kind: str, cert_path: Path, key_path: Path, now: dt.datetime) -> ServerKeyPair:
    """Load and check one configured pair of kind "ecdsa" or "rsa"."""
    cert_pem = _read(cert_path, "certificate")
    key_pem = _read(key_path, "private key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ServerCertError(f"{cert_path}: not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ServerCertError(f"{key_path}: not an unencrypted PEM private key: {exc}") from None
    if kind == "ecdsa":
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in (
            "secp384r1",
            "secp256r1",
        ):
            raise ServerCertError(f"{key_path}: ecdsa_private_key must be an EC P-384/P-256 key")
    elif not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        raise ServerCertError(f"{key_path}: rsa_private_key must be an RSA key of >= 2048 bits")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise ServerCertError(f"{cert_path}: certificate does not match key {key_path}")
    return _credential(kind, cert, cert_pem, key_pem, cert_path, now)


def _credential(
    kind: str, cert: x509.Certificate, cert_pem: bytes, key_pem: bytes, path: Path, now: dt.datetime
) -> ServerKeyPair:
    fingerprint = cert.fingerprint(hashes.SHA256()).hex()
    not_after = cert.not_valid_after_utc
    if not_after <= now:
        raise ServerCertError(
            f"{path}: certificate expired on {not_after:%Y-%m-%d}: every client rejects it"
        )
    if not_after - now < EXPIRY_WARNING:
        emit(log, logging.WARNING, "server-cert-expiring", path=path, not_after=not_after)
    return ServerKeyPair(kind, cert_pem, key_pem, path, fingerprint, not_after)


def ensure_generated(directory: Path, now: dt.datetime) -> ServerKeyPair:
    """Load the generated ECDSA P-384 pair from `directory`, creating it on first use."""
    cert_path, key_path = directory / GENERATED_CERT, directory / GENERATED_KEY
    if cert_path.exists() or key_path.exists():
        return load_pair("ecdsa", cert_path, key_path, now)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seng-gateway")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + GENERATED_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    cert_path.write_bytes(cert_pem)
    cred = _credential("ecdsa", cert, cert_pem, key_pem, cert_path, now)
    emit(
        log,
        logging.WARNING,
        "server-cert-generated",
        path=cert_path,
        sha256=cred.fingerprint_sha256,
        not_after=cred.not_after.date(),
        hint="copy this certificate into the clients: they pin it",
    )
    return cred
