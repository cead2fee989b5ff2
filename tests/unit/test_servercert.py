"""Server certificates: generated once and kept, configured pairs checked for what clients need."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sengd.config import TunnelSection
from sengd.servercert import ServerCertError, ensure_generated, load_credentials, load_pair

NOW = dt.datetime(2026, 11, 27, tzinfo=dt.UTC)


def test_generated_once_then_reused(tmp_path: Path) -> None:
    first = ensure_generated(tmp_path / "gen", NOW)
    second = ensure_generated(tmp_path / "gen", NOW)
    assert first.fingerprint_sha256 == second.fingerprint_sha256
    cert = x509.load_pem_x509_certificate(first.certificate_pem)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    mode = (tmp_path / "gen" / "server-ecdsa.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def _write_pair(
    tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, days: int
) -> tuple[Path, Path]:
    name = x509.Name([])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    c, k = tmp_path / "c.pem", tmp_path / "k.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def test_configured_rsa_pair(tmp_path: Path) -> None:
    c, k = _write_pair(tmp_path, rsa.generate_private_key(65537, 2048), 365)
    creds = load_credentials(TunnelSection(rsa_certificate=c, rsa_private_key=k), NOW)
    assert [cred.kind for cred in creds] == ["rsa"]


def test_wrong_kind_mismatch_expired_and_missing(tmp_path: Path) -> None:
    c, k = _write_pair(tmp_path, rsa.generate_private_key(65537, 2048), 365)
    with pytest.raises(ServerCertError, match="must be an EC P-384/P-256 key"):
        load_pair("ecdsa", c, k, NOW)
    other = tmp_path / "other"
    other.mkdir()
    c2, _ = _write_pair(other, rsa.generate_private_key(65537, 2048), 365)
    with pytest.raises(ServerCertError, match="does not match key"):
        load_pair("rsa", c2, k, NOW)
    expired = tmp_path / "expired"
    expired.mkdir()
    c3, k3 = _write_pair(expired, ec.generate_private_key(ec.SECP384R1()), 0)
    with pytest.raises(ServerCertError, match="expired"):
        load_pair("ecdsa", c3, k3, NOW + dt.timedelta(days=1))
    with pytest.raises(ServerCertError, match="cannot read certificate"):
        load_pair("rsa", tmp_path / "nope.pem", k, NOW)
    c.write_text("not pem")
    with pytest.raises(ServerCertError, match="not a PEM certificate"):
        load_pair("rsa", c, k, NOW)
