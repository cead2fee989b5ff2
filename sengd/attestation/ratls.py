"""SENG RA-TLS certificates (PROTOCOL.md §3): find, decode and check their parts.

An RA-TLS certificate is self-signed by the enclave's key and carries the IAS report in four
extensions under 1.2.840.113741.1337: .2 report body, .3 IAS CA certificate, .4 IAS signing
certificate, .5 report signature. SENG clients base64-encode all four values; later upstream
sgx-ra-tls stores the body as raw JSON and the certificates as PEM text (accepted if the trust
config allows it). The signature (.5) is base64 in both.
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from sengd.attestation import der
from sengd.attestation.b64 import strict_b64decode
from sengd.attestation.errors import AttestationError, Reason

# SENG's attester never sets a serial number, so OpenSSL encodes 0, which RFC 5280 forbids and
# `cryptography` warns about (and announces it will refuse). Genuine clients must keep working:
# silence exactly that warning for this package; tests pin that serial-0 certificates verify.
warnings.filterwarnings(
    "ignore",
    message="Parsed a serial number which wasn't positive",
    category=CryptographyDeprecationWarning,
    module=r"sengd\.",
)
# Malformed names in hostile certificates are rejected anyway; do not let them spam the log.
warnings.filterwarnings(
    "ignore", message="Attribute's length must be", category=UserWarning, module=r"sengd\."
)

X509_PARSE_ERRORS: tuple[type[Exception], ...] = (ValueError, x509.InvalidVersion)
"""What `cryptography` raises for unparseable certificates (InvalidVersion is no ValueError)."""


MAX_CERT_BYTES = 64 * 1024
"""Larger certificates are refused unparsed (genuine ones are 5.5-6.5 KB; DTLS allows 8 KB)."""

SENG_OID_ARC = "1.2.840.113741.1337"
OID_IAS_RESPONSE_BODY = x509.ObjectIdentifier(f"{SENG_OID_ARC}.2")
OID_IAS_ROOT_CERT = x509.ObjectIdentifier(f"{SENG_OID_ARC}.3")
OID_IAS_LEAF_CERT = x509.ObjectIdentifier(f"{SENG_OID_ARC}.4")
OID_IAS_REPORT_SIGNATURE = x509.ObjectIdentifier(f"{SENG_OID_ARC}.5")
SENG_EPID_OIDS: tuple[x509.ObjectIdentifier, ...] = (
    OID_IAS_RESPONSE_BODY,
    OID_IAS_ROOT_CERT,
    OID_IAS_LEAF_CERT,
    OID_IAS_REPORT_SIGNATURE,
)
_OID_NAMES = {
    OID_IAS_RESPONSE_BODY: "ias_response_body (.2)",
    OID_IAS_ROOT_CERT: "ias_root_cert (.3)",
    OID_IAS_LEAF_CERT: "ias_leaf_cert (.4)",
    OID_IAS_REPORT_SIGNATURE: "ias_report_signature (.5)",
}
DCAP_OIDS = frozenset(x509.ObjectIdentifier(f"{SENG_OID_ARC}.{n}") for n in range(6, 14))
"""sgx-ra-tls ECDSA/DCAP extensions (PROTOCOL.md §11): recognised only to say so in errors."""

_CRITICAL_OK = frozenset({ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, *SENG_EPID_OIDS})
_RSA_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
    }
)
_EC_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
_EC_CURVES = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}
MIN_RSA_BITS = 2048

PayloadEncoding = Literal["base64", "upstream"]


@dataclass(frozen=True, slots=True)
class RaTlsPayload:
    """The decoded contents of the four SENG extensions (nothing verified yet)."""

    report_body: bytes
    ca_cert_der: bytes  # .3: informational only, never a trust anchor
    signing_cert_der: bytes
    signature: bytes
    encoding: PayloadEncoding  # "upstream" if any value used the raw JSON / PEM form


@dataclass(frozen=True, slots=True)
class CertKey:
    """The certificate's public key as the certificate encodes it."""

    key_type: str  # "rsa-2048", "rsa-3072", "ec-p256", "ec-p384"
    spki_der: bytes  # the exact SubjectPublicKeyInfo element
    key_bits: bytes  # the subjectPublicKey BIT STRING contents (what report_data binds)
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class KeyBinding(StrEnum):
    """How report_data commits to the TLS key."""

    SENG = "sha256-spki-bits"
    """report_data[0:32] == SHA-256(SPKI BIT STRING contents) (SENG / sgx-ra-tls; §6)."""
    RAW_EC_POINT = "raw-ec-point"
    """report_data[0:64] == X || Y of an uncompressed EC point (Rust SGX SDK / Teaclave)."""


@dataclass(frozen=True, slots=True)
class ParsedCertificate:
    """A certificate decoded once: `cryptography`'s view plus the exact signed bytes.

    `tbs` and `signature` come from this package's strict DER split, so the self-signature is
    checked over exactly the bytes received. The verifier never reads the names of the RA-TLS
    certificate (nothing depends on them), so they are not decoded.
    """

    cert: x509.Certificate
    tbs: bytes
    signature: bytes
    not_before: datetime
    not_after: datetime


def parse_certificate(cert_der: bytes) -> ParsedCertificate:
    """Parse one DER certificate strictly, or raise `cert-malformed`."""
    if len(cert_der) > MAX_CERT_BYTES:
        raise AttestationError(
            Reason.CERT_MALFORMED, f"certificate is {len(cert_der)} bytes (limit {MAX_CERT_BYTES})"
        )
    raw = bytes(cert_der)
    try:
        parts = der.split_certificate(raw)
        signature = der.signature_bytes(parts)
        cert = x509.load_der_x509_certificate(raw)
        # cryptography decodes fields when first read; read the ones used later here, once.
        _ = (cert.version, cert.serial_number, cert.signature_algorithm_oid)
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except X509_PARSE_ERRORS as exc:
        raise AttestationError(
            Reason.CERT_MALFORMED, f"not a DER X.509 certificate ({exc})"
        ) from None
    return ParsedCertificate(cert, parts.tbs, signature, not_before, not_after)


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except x509.DuplicateExtension as exc:
        name = _OID_NAMES.get(exc.oid, exc.oid.dotted_string)
        raise AttestationError(
            Reason.EXTENSION_DUPLICATED, f"extension {name} appears more than once"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AttestationError(
            Reason.CERT_MALFORMED, f"unreadable certificate extension ({exc})"
        ) from None


def _pem_certificate(value: bytes, name: str) -> bytes:
    lines = value.strip().split(b"\n")
    lines = [line.rstrip(b"\r") for line in lines]
    if (
        len(lines) < 3
        or lines[0] != b"-----BEGIN CERTIFICATE-----"
        or lines[-1] != b"-----END CERTIFICATE-----"
    ):
        raise AttestationError(
            Reason.EXTENSION_MALFORMED, f"{name} is not exactly one PEM certificate"
        )
    try:
        return strict_b64decode(b"".join(lines[1:-1]))
    except ValueError as exc:
        raise AttestationError(
            Reason.EXTENSION_MALFORMED, f"{name} PEM body is not base64 ({exc})"
        ) from None


def _decode(value: bytes, oid: x509.ObjectIdentifier, accept_upstream: bool) -> tuple[bytes, bool]:
    """(decoded bytes, whether the upstream raw form was used)."""
    name = _OID_NAMES[oid]
    if oid == OID_IAS_RESPONSE_BODY and value.startswith(b"{"):
        if not accept_upstream:
            raise AttestationError(
                Reason.EXTENSION_MALFORMED,
                f"{name} holds raw JSON (upstream encoding), which the trust config refuses",
            )
        return value, True
    if oid in (OID_IAS_ROOT_CERT, OID_IAS_LEAF_CERT) and value.startswith(b"-----BEGIN"):
        if not accept_upstream:
            raise AttestationError(
                Reason.EXTENSION_MALFORMED,
                f"{name} holds PEM (upstream encoding), which the trust config refuses",
            )
        return _pem_certificate(value, name), True
    try:
        return strict_b64decode(value), False
    except ValueError as exc:
        raise AttestationError(
            Reason.EXTENSION_MALFORMED, f"{name} is not strict base64 ({exc})"
        ) from None


def extract_payload(cert: x509.Certificate, *, accept_upstream: bool = True) -> RaTlsPayload:
    """Find the four SENG extensions (each exactly once) and decode their values.

    Raises `no-sgx-extension` (none of them), `extension-missing` (some), `extension-duplicated`,
    `extension-malformed`, `cert-critical-extension` (a critical extension this verifier does
    not process) or `cert-malformed`.
    """
    found: dict[x509.ObjectIdentifier, bytes] = {}
    has_dcap = False
    for ext in _extensions(cert):
        if ext.critical and ext.oid not in _CRITICAL_OK:
            raise AttestationError(
                Reason.CERT_CRITICAL_EXTENSION,
                f"critical extension {ext.oid.dotted_string} is not understood",
            )
        if ext.oid in _OID_NAMES:
            value = ext.value
            if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover
                raise AttestationError(Reason.EXTENSION_MALFORMED, f"{ext.oid} has a known type")
            found[ext.oid] = value.value
        elif ext.oid in DCAP_OIDS:
            has_dcap = True
    if not found:
        hint = (
            " (it is a DCAP/ECDSA RA-TLS certificate, which SENG does not use)" if has_dcap else ""
        )
        raise AttestationError(
            Reason.NO_SGX_EXTENSION,
            f"the certificate carries no SGX attestation extension 1.2.840.113741.1337.2-.5{hint}",
        )
    missing = [_OID_NAMES[oid] for oid in SENG_EPID_OIDS if oid not in found]
    if missing:
        raise AttestationError(
            Reason.EXTENSION_MISSING, f"missing attestation extension(s): {', '.join(missing)}"
        )
    body, raw_body = _decode(found[OID_IAS_RESPONSE_BODY], OID_IAS_RESPONSE_BODY, accept_upstream)
    ca_der, raw_ca = _decode(found[OID_IAS_ROOT_CERT], OID_IAS_ROOT_CERT, accept_upstream)
    leaf_der, raw_leaf = _decode(found[OID_IAS_LEAF_CERT], OID_IAS_LEAF_CERT, accept_upstream)
    try:
        signature = strict_b64decode(found[OID_IAS_REPORT_SIGNATURE])
    except ValueError as exc:
        raise AttestationError(
            Reason.EXTENSION_MALFORMED,
            f"{_OID_NAMES[OID_IAS_REPORT_SIGNATURE]} is not strict base64 ({exc})",
        ) from None
    try:
        der.check_certificate_encoding(ca_der)
        x509.load_der_x509_certificate(ca_der)
    except X509_PARSE_ERRORS as exc:
        raise AttestationError(
            Reason.EXTENSION_MALFORMED,
            f"{_OID_NAMES[OID_IAS_ROOT_CERT]} is not a DER certificate ({exc})",
        ) from None
    return RaTlsPayload(
        report_body=body,
        ca_cert_der=ca_der,
        signing_cert_der=leaf_der,
        signature=signature,
        encoding="upstream" if (raw_body or raw_ca or raw_leaf) else "base64",
    )


def certificate_key(parsed: ParsedCertificate) -> CertKey:
    """The certificate's key: RSA of at least 2048 bits, or EC P-256 / P-384.

    Raises `key-unsupported` for any other key, `cert-malformed` if the SPKI is unreadable.
    """
    try:
        key = parsed.cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AttestationError(Reason.KEY_UNSUPPORTED, f"unusable public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise AttestationError(
                Reason.KEY_UNSUPPORTED,
                f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} required)",
            )
        key_type = f"rsa-{key.key_size}"
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey = key
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = _EC_CURVES.get(key.curve.name)
        if curve is None:
            raise AttestationError(
                Reason.KEY_UNSUPPORTED, f"EC curve {key.curve.name} (P-256 or P-384 required)"
            )
        key_type = curve
        public_key = key
    else:
        raise AttestationError(
            Reason.KEY_UNSUPPORTED, f"{type(key).__name__} keys are not supported (RSA or EC)"
        )
    try:
        spki = der.tbs_spki(parsed.tbs)
        bits = der.spki_key_bits(spki)
    except der.DerError as exc:
        raise AttestationError(
            Reason.CERT_MALFORMED, f"unreadable SubjectPublicKeyInfo ({exc})"
        ) from None
    return CertKey(key_type, spki, bits, public_key)


def check_self_signature(parsed: ParsedCertificate, key: CertKey) -> None:
    """The certificate must be signed by its own key (RSA PKCS#1 v1.5 or ECDSA, SHA-2)."""
    try:
        algorithm = parsed.cert.signature_algorithm_oid
        digest = parsed.cert.signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AttestationError(
            Reason.CERT_SIGNATURE_INVALID, f"unsupported signature algorithm ({exc})"
        ) from None
    if not isinstance(digest, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        raise AttestationError(
            Reason.CERT_SIGNATURE_INVALID, "the certificate signature must use SHA-256/384/512"
        )
    public_key = key.public_key
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if algorithm not in _RSA_SIGNATURES:
                raise AttestationError(
                    Reason.CERT_SIGNATURE_INVALID,
                    f"signature algorithm {algorithm.dotted_string} does not fit an RSA key "
                    "(sha256/384/512WithRSAEncryption required)",
                )
            public_key.verify(parsed.signature, parsed.tbs, padding.PKCS1v15(), digest)
        else:
            if algorithm not in _EC_SIGNATURES:
                raise AttestationError(
                    Reason.CERT_SIGNATURE_INVALID,
                    f"signature algorithm {algorithm.dotted_string} does not fit an EC key "
                    "(ecdsa-with-SHA256/384/512 required)",
                )
            public_key.verify(parsed.signature, parsed.tbs, ec.ECDSA(digest))
    except (InvalidSignature, ValueError, TypeError):
        raise AttestationError(
            Reason.CERT_SIGNATURE_INVALID, "the certificate is not signed by its own key"
        ) from None


def check_validity(
    not_before: datetime, not_after: datetime, now: datetime, skew: timedelta
) -> None:
    """`now` must lie within [not_before - skew, not_after + skew]."""
    if now < not_before - skew:
        raise AttestationError(
            Reason.CERT_NOT_YET_VALID,
            f"the certificate is valid from {not_before.isoformat()}; now is {now.isoformat()}",
        )
    if now > not_after + skew:
        raise AttestationError(
            Reason.CERT_EXPIRED,
            f"the certificate expired {not_after.isoformat()}; now is {now.isoformat()}",
        )


def check_key_binding(
    key_bits: bytes, report_data: bytes, scheme: KeyBinding = KeyBinding.SENG
) -> None:
    """Require report_data to commit to the key whose SPKI BIT STRING contents are `key_bits`.

    SENG (the default and the only scheme `verify_certificate` uses): SHA-256 of the bits equals
    report_data[0:32]; bytes 32-63 are ignored, like the C++ server. `RAW_EC_POINT` exists to
    check real third-party certificates that bind their P-256 key as raw X||Y.
    """
    if scheme is KeyBinding.SENG:
        ok = hmac.compare_digest(hashlib.sha256(key_bits).digest(), report_data[:32])
    else:
        ok = (
            len(key_bits) == 65
            and key_bits[0] == 0x04
            and hmac.compare_digest(key_bits[1:], report_data[:64])
        )
    if not ok:
        raise AttestationError(
            Reason.KEY_BINDING_MISMATCH,
            "report_data does not commit to the certificate's public key "
            f"({scheme.value}): the quote belongs to a different key",
        )
