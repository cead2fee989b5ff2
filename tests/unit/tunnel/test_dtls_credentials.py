"""Server credentials and the fork guard of the DTLS module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from mbedtls import _random as mbedtls_random

from sengd.tunnel.dtls import CredentialError, KeyType, ServerCredential
from tests.unit.tunnel.certs import make_cert, make_key

PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER


def key_bytes(key: object, encoding: serialization.Encoding = PEM, password: bytes = b"") -> bytes:
    assert isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    )
    algorithm: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, algorithm)


@pytest.mark.parametrize(
    ("kind", "key_type"), [("rsa", KeyType.RSA), ("p384", KeyType.ECDSA), ("p256", KeyType.ECDSA)]
)
@pytest.mark.parametrize("encoding", [PEM, DER])
def test_credentials_load_from_pem_and_der(
    kind: str, key_type: KeyType, encoding: serialization.Encoding
) -> None:
    key = make_key(kind)
    cert = make_cert(key, "gw")
    credential = ServerCredential.from_bytes(cert.public_bytes(encoding), key_bytes(key, encoding))
    assert credential.key_type == key_type
    assert credential.certificate_der == cert.public_bytes(DER)
    assert credential.private_key_der.hex() not in repr(credential)


def test_credentials_load_from_files_and_encrypted_key(tmp_path: Path) -> None:
    key = make_key("p384")
    cert = make_cert(key, "gw")
    (tmp_path / "gw.crt").write_bytes(cert.public_bytes(PEM))
    (tmp_path / "gw.key").write_bytes(key_bytes(key))
    assert ServerCredential.load(tmp_path / "gw.crt", tmp_path / "gw.key").key_type == KeyType.ECDSA
    encrypted = key_bytes(key, password=b"secret")
    with pytest.raises(CredentialError, match="private key does not load"):
        ServerCredential.from_bytes(cert.public_bytes(PEM), encrypted)
    assert (
        ServerCredential.from_bytes(cert.public_bytes(PEM), encrypted, b"secret").key_type
        == KeyType.ECDSA
    )


def test_credential_errors_name_the_problem(tmp_path: Path) -> None:
    key = make_key("p384")
    cert = make_cert(key, "gw")
    other = make_key("p384")
    with pytest.raises(CredentialError, match="does not match"):
        ServerCredential.from_bytes(cert.public_bytes(PEM), key_bytes(other))
    with pytest.raises(CredentialError, match="certificate does not parse"):
        ServerCredential.from_bytes(b"-----BEGIN CERTIFICATE-----\nxx\n", key_bytes(key))
    with pytest.raises(CredentialError, match="certificate does not parse"):
        ServerCredential.from_bytes(b"\x30\x03\x02\x01\x00", key_bytes(key))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CredentialError, match="too small"):
        ServerCredential.from_bytes(make_cert(small, "gw").public_bytes(PEM), key_bytes(small))
    k224 = ec.generate_private_key(ec.SECP224R1())
    with pytest.raises(CredentialError, match="curve secp224r1"):
        ServerCredential.from_bytes(make_cert(k224, "gw").public_bytes(PEM), key_bytes(k224))
    edkey = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(CredentialError, match="unsupported key type"):
        ServerCredential.from_bytes(cert.public_bytes(PEM), key_bytes(edkey))
    (tmp_path / "bad.crt").write_bytes(b"nope")
    (tmp_path / "gw.key").write_bytes(key_bytes(key))
    with pytest.raises(CredentialError, match=r"bad\.crt"):
        ServerCredential.load(tmp_path / "bad.crt", tmp_path / "gw.key")
    with pytest.raises(OSError):
        ServerCredential.load(tmp_path / "missing.crt", tmp_path / "gw.key")


def test_certificate_of_an_unknown_x509_version_is_a_credential_error() -> None:
    key = make_key("p384")
    der = make_cert(key, "gw").public_bytes(DER)
    v3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    assert v3 in der
    v2_claimed = der.replace(v3, bytes.fromhex("a003020101"), 1)  # 1: not a version we parse
    with pytest.raises(CredentialError, match="certificate does not parse"):
        ServerCredential.from_bytes(v2_claimed, key_bytes(key))


def test_fork_reseeds_the_mbedtls_random_generator() -> None:
    import sengd.tunnel.dtls  # noqa: F401  (registers the at-fork hook)

    rng = mbedtls_random.default_rng()
    rng.urandom(16)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next randoms, exit without running pytest teardown
        try:
            os.write(write_end, bytes(rng.urandom(32)))
        finally:
            os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 32)
    os.close(read_end)
    os.waitpid(pid, 0)
    parent = bytes(rng.urandom(32))
    assert len(child) == 32
    assert child != parent
