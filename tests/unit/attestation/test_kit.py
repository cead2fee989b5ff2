"""The test kit mints what SENG clients send (PROTOCOL.md §3.1/§3.2), and the daemon never
imports it."""

from __future__ import annotations

import ast
import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from sengd.attestation import der
from sengd.testing.attestation_kit import (
    KEY_TYPES,
    SENG_SUBJECT,
    KeyType,
    PrivateKey,
    TestIas,
    mint_ratls_certificate,
    public_key_bits,
)
from tests.unit.attestation.conftest import NOW

REPO = Path(__file__).resolve().parents[3]
OID_PREFIX = bytes.fromhex("06092a864886f84d8a39")


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_minted_certificate_matches_the_seng_attester(
    ias: TestIas, keys: dict[KeyType, PrivateKey], key_type: KeyType
) -> None:
    minted = mint_ratls_certificate(ias, key=keys[key_type], not_before=NOW)
    cert = minted.certificate
    assert cert.version is x509.Version.v3
    assert cert.serial_number == 0
    assert cert.subject == cert.issuer == SENG_SUBJECT
    assert cert.subject.rfc4514_string().startswith("CN=SGX rocks!")
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(seconds=31_536_000)
    exts = list(cert.extensions)
    assert [e.oid.dotted_string for e in exts] == [
        "1.2.840.113741.1337.2",
        "1.2.840.113741.1337.3",
        "1.2.840.113741.1337.4",
        "1.2.840.113741.1337.5",
    ]
    assert not any(e.critical for e in exts)
    values = []
    for ext in exts:
        assert isinstance(ext.value, x509.UnrecognizedExtension)
        raw = ext.value.value
        assert b"\n" not in raw and len(raw) >= 256
        values.append(base64.b64decode(raw, validate=True))
    body, ca, signing, signature = values
    assert json.loads(body)["isvEnclaveQuoteStatus"] == "OK"
    assert ca == ias.ca_der and signing == ias.signing_der
    assert len(signature) == 256 and len(exts[3].value.value) == 344  # type: ignore[attr-defined]
    # long-form OCTET STRING lengths (82 HH LL), as the 2018 challengers require
    for ext_number in (2, 3, 4, 5):
        at = minted.cert_der.index(OID_PREFIX + bytes([ext_number]))
        assert minted.cert_der[at + 11 : at + 13] == b"\x04\x82"
    # self-signed with the enclave key, SHA-256
    public = keys[key_type].public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(
            cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256()
        )
    else:
        public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))


def test_key_encodings_the_binding_hashes(keys: dict[KeyType, PrivateKey]) -> None:
    # PROTOCOL.md §6: RSA-2048 PKCS#1 RSAPublicKey is 270 bytes; P-384 point is 97 bytes
    assert len(public_key_bits(keys["rsa-2048"])) == 270
    assert len(public_key_bits(keys["ec-p384"])) == 97
    for key in keys.values():
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert der.spki_key_bits(spki) == public_key_bits(key)


def test_private_key_and_pem_outputs(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> None:
    minted = mint_ratls_certificate(ias, key=keys["rsa-2048"])
    loaded = serialization.load_pem_private_key(minted.key_pem, None)
    assert loaded.public_key() == keys["rsa-2048"].public_key()  # type: ignore[comparison-overlap]
    assert (
        x509.load_pem_x509_certificate(minted.cert_pem).public_bytes(serialization.Encoding.DER)
        == minted.cert_der
    )


def test_default_validity_starts_now(ias: TestIas, keys: dict[KeyType, PrivateKey]) -> None:
    from datetime import UTC, datetime

    minted = mint_ratls_certificate(ias, key=keys["ec-p256"])
    start = minted.certificate.not_valid_before_utc
    assert timedelta(0) <= datetime.now(UTC) - start < timedelta(minutes=5)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_daemon_never_imports_the_test_kit() -> None:
    offenders = []
    for path in (REPO / "sengd").rglob("*.py"):
        if "testing" in path.relative_to(REPO / "sengd").parts:
            continue
        if any(n == "sengd.testing" or n.startswith("sengd.testing.") for n in _imports(path)):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
