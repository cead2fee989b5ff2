"""A test stand-in for Intel's attestation service and for SENG's RA-TLS attester.

- `TestIas`: a report signing CA and an IAS signing certificate of our own, which sign
  IAS-style reports for chosen measurements, statuses, flags and timestamps.
- `mint_ratls_certificate()`: a SENG-format RA-TLS client certificate exactly as PROTOCOL.md
  §3.1/§3.2 describes it (self-signed, subject "SGX rocks!", serial 0, four non-critical
  extensions 1.2.840.113741.1337.2-.5, base64 values, report_data binding the key), for
  RSA-2048 / RSA-3072 / EC P-256 / EC P-384 keys; plus switches for broken variants.

It returns the certificate DER and the private key, so the enclave emulator can run real DTLS
handshakes with it. Verify minted certificates with `ias.trust()`, never with Intel's root.
Nothing here is used by the daemon.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Unpack

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from sengd.attestation import der
from sengd.attestation.quote import SGX_FLAG_DEBUG, SGX_FLAG_INIT, SGX_FLAG_MODE64BIT
from sengd.attestation.quote import build_quote_body as _build_quote_body
from sengd.attestation.ratls import SENG_EPID_OIDS
from sengd.attestation.trust import TrustConfig, TrustOptions

KeyType = Literal["rsa-2048", "rsa-3072", "ec-p256", "ec-p384"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
KEY_TYPES: tuple[KeyType, ...] = ("rsa-2048", "rsa-3072", "ec-p256", "ec-p384")

DEFAULT_MR_ENCLAVE = hashlib.sha256(b"seng-gateway test enclave").digest()
DEFAULT_MR_SIGNER = hashlib.sha256(b"seng-gateway test signer").digest()
PRODUCTION_FLAGS = SGX_FLAG_INIT | SGX_FLAG_MODE64BIT
DEBUG_FLAGS = PRODUCTION_FLAGS | SGX_FLAG_DEBUG

SENG_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "OR"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Hillsboro"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Inc."),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Intel Labs"),
        x509.NameAttribute(NameOID.COMMON_NAME, "SGX rocks!"),
    ]
)
"""Subject and issuer of every SENG RA-TLS certificate (PROTOCOL.md §3.1)."""

EXTENSION_INDEX = {
    2: SENG_EPID_OIDS[0],
    3: SENG_EPID_OIDS[1],
    4: SENG_EPID_OIDS[2],
    5: SENG_EPID_OIDS[3],
}
"""Extension number (the last OID arc, 2-5) -> OID."""

# Same encoded length as .2-.5 (one-byte last arc), so swapping it in leaves all lengths intact.
_PLACEHOLDER_ARC = 0x70
_OID_PREFIX = bytes.fromhex("06092a864886f84d8a39")


def generate_key(key_type: KeyType) -> PrivateKey:
    """A fresh key of one of the kinds SENG clients (or their later variants) use."""
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa-3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError(f"unknown key type {key_type!r}")


def key_type_of(key: PrivateKey) -> str:
    """The name of a key's kind as `Evidence.key_type` spells it ("rsa-1024", "ec-p521" too)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    names = {"secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521"}
    return names.get(key.curve.name, f"ec-{key.curve.name}")


def public_key_bits(key: PrivateKey) -> bytes:
    """What the SENG attester hashes into report_data: the SPKI BIT STRING contents."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def seng_report_data(key: PrivateKey) -> bytes:
    """report_data as the SENG attester fills it: SHA-256(key bits) || 32 zero bytes."""
    return hashlib.sha256(public_key_bits(key)).digest() + bytes(32)


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def resign_with_patched_tbs(
    cert_der: bytes, key: PrivateKey, patch: Callable[[bytes], bytes]
) -> bytes:
    """Apply `patch` to the DER TBSCertificate and sign it again with `key` (SHA-256).

    The signature algorithm element is kept, so `key` must be of the kind the certificate was
    built for. Used to produce encodings `cryptography`'s builder refuses to (serial 0,
    duplicated extensions) and wrongly signed certificates.
    """
    parts = der.split_certificate(cert_der)
    tbs = patch(parts.tbs)
    signature = der.encode_tlv(der.TAG_BIT_STRING, b"\x00" + _sign(key, tbs))
    return der.encode_tlv(der.TAG_SEQUENCE, tbs + parts.signature_algorithm + signature)


def _set_serial_zero(tbs: bytes) -> bytes:
    # Children are contiguous, so a child's header starts where its predecessor ends.
    outer = der.expect(tbs, 0, der.TAG_SEQUENCE)
    fields = der.children(tbs, outer)
    index = 1 if fields[0].tag == der.TAG_CONTEXT_0 else 0
    serial = fields[index]
    begin = fields[index - 1].end if index else outer.start
    contents = tbs[outer.start : begin] + b"\x02\x01\x00" + tbs[serial.end : outer.end]
    return der.encode_tlv(der.TAG_SEQUENCE, contents)


@dataclass(frozen=True)
class SignedReport:
    """An IAS-style report: exact body bytes, signature, and the signing certificate (DER)."""

    body: bytes
    signature: bytes
    signing_cert_der: bytes

    @property
    def signature_b64(self) -> bytes:
        """The signature as IAS sends it in X-IASReport-Signature."""
        return base64.b64encode(self.signature)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "seng-gateway tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class TestIas:
    """A test attestation service: report signing CA (RSA) and signing certificate (RSA-2048).

    Build one per test session (RSA key generation is slow) and derive variants with
    `with_signing_validity()`. `trust()` gives a `TrustConfig` anchored on this CA.
    """

    __test__ = False  # not a pytest test class, despite the name

    ca_key: rsa.RSAPrivateKey
    ca_cert: x509.Certificate
    signing_key: rsa.RSAPrivateKey
    signing_cert: x509.Certificate
    _counter: list[int] = field(default_factory=lambda: [0], repr=False)

    @classmethod
    def create(
        cls,
        *,
        ca_key_size: int = 3072,
        name: str = "Test SGX Attestation Report Signing CA",
        not_before: datetime = datetime(2016, 11, 14, tzinfo=UTC),
        not_after: datetime = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
        signing_not_before: datetime = datetime(2016, 11, 22, tzinfo=UTC),
        signing_not_after: datetime = datetime(2048, 11, 20, tzinfo=UTC),
        ca_key: rsa.RSAPrivateKey | None = None,
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> TestIas:
        """Generate a CA (like Intel's: CA:TRUE pathlen 0, keyCertSign+cRLSign) and a signer."""
        ca_key = ca_key or rsa.generate_private_key(public_exponent=65537, key_size=ca_key_size)
        ca_name = _name(name)
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        signing_key = signing_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ias = cls(ca_key, ca_cert, signing_key, ca_cert)
        ias.signing_cert = ias.issue_signing_certificate(signing_not_before, signing_not_after)
        return ias

    def issue_signing_certificate(
        self,
        not_before: datetime,
        not_after: datetime,
        *,
        key: rsa.RSAPrivateKey | None = None,
        ca: bool = False,
        digital_signature: bool = True,
    ) -> x509.Certificate:
        """A report signing certificate issued by this CA (like Intel's, or broken on request)."""
        key = key or self.signing_key
        return (
            x509.CertificateBuilder()
            .subject_name(_name("Test SGX Attestation Report Signing"))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=digital_signature,
                    content_commitment=True,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )

    def with_signing_validity(self, not_before: datetime, not_after: datetime) -> TestIas:
        """The same CA and signing key, with a signing certificate valid only in this window."""
        variant = TestIas(self.ca_key, self.ca_cert, self.signing_key, self.signing_cert)
        variant.signing_cert = self.issue_signing_certificate(not_before, not_after)
        return variant

    @property
    def ca_der(self) -> bytes:
        """The CA certificate, DER."""
        return self.ca_cert.public_bytes(serialization.Encoding.DER)

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM (what a config file or `--ias-root` would hold)."""
        return self.ca_cert.public_bytes(serialization.Encoding.PEM)

    @property
    def signing_der(self) -> bytes:
        """The signing certificate, DER."""
        return self.signing_cert.public_bytes(serialization.Encoding.DER)

    @property
    def signing_pem(self) -> bytes:
        """The signing certificate, PEM."""
        return self.signing_cert.public_bytes(serialization.Encoding.PEM)

    def trust(self, **options: Unpack[TrustOptions]) -> TrustConfig:
        """A `TrustConfig` whose only IAS anchor is this CA."""
        return TrustConfig.from_pem(self.ca_pem, "<test IAS CA>", **options)

    def report_body(
        self,
        quote_body: bytes,
        *,
        status: str = "OK",
        timestamp: datetime | None = None,
        version: int | None = 4,
        report_id: str | None = None,
        advisory_ids: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bytes:
        """Compact JSON in IAS's field order (PROTOCOL.md §4.1)."""
        self._counter[0] += 1
        moment = (timestamp or datetime.now(UTC)).astimezone(UTC)
        doc: dict[str, Any] = {
            "id": report_id or str(10**37 + secrets.randbelow(10**37) + self._counter[0]),
            "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        }
        if version is not None:
            doc["version"] = version
        doc["epidPseudonym"] = base64.b64encode(hashlib.sha512(quote_body).digest() * 2).decode()
        if advisory_ids:
            doc["advisoryURL"] = "https://security-center.intel.com"
            doc["advisoryIDs"] = list(advisory_ids)
        doc["isvEnclaveQuoteStatus"] = status
        if status in ("GROUP_OUT_OF_DATE", "GROUP_REVOKED", "CONFIGURATION_NEEDED"):
            doc["platformInfoBlob"] = "1502006504000F" + "00" * 98
        doc["isvEnclaveQuoteBody"] = base64.b64encode(quote_body).decode()
        doc.update(extra or {})
        return json.dumps(doc, separators=(",", ":")).encode()

    def sign(self, body: bytes, *, signing_key: rsa.RSAPrivateKey | None = None) -> SignedReport:
        """Sign exact body bytes (RSASSA-PKCS1-v1_5 / SHA-256) as IAS does."""
        key = signing_key or self.signing_key
        return SignedReport(
            body, key.sign(body, padding.PKCS1v15(), hashes.SHA256()), self.signing_der
        )

    def sign_report(
        self,
        quote_body: bytes,
        *,
        status: str = "OK",
        timestamp: datetime | None = None,
        version: int | None = 4,
        report_id: str | None = None,
        advisory_ids: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> SignedReport:
        """`report_body` + `sign`: a report IAS could have issued for `quote_body`."""
        body = self.report_body(
            quote_body,
            status=status,
            timestamp=timestamp,
            version=version,
            report_id=report_id,
            advisory_ids=advisory_ids,
            extra=extra,
        )
        return self.sign(body)


def make_quote_body(
    *,
    report_data: bytes = bytes(64),
    mr_enclave: bytes = DEFAULT_MR_ENCLAVE,
    mr_signer: bytes = DEFAULT_MR_SIGNER,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    flags: int = PRODUCTION_FLAGS,
    xfrm: int = 0x3,
    cpu_svn: bytes = bytes(16),
) -> bytes:
    """A 432-byte linkable EPID quote body for chosen measurements."""
    return _build_quote_body(
        mr_enclave=mr_enclave,
        mr_signer=mr_signer,
        report_data=report_data,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        flags=flags,
        xfrm=xfrm,
        cpu_svn=cpu_svn,
        epid_group_id=0xB56,
        qe_svn=13,
        pce_svn=13,
        basename=hashlib.sha256(b"basename").digest()[:16] + bytes(16),
    )


@dataclass(frozen=True)
class MintedCertificate:
    """A minted RA-TLS certificate, its private key and what went into it."""

    cert_der: bytes
    private_key: PrivateKey
    key_type: str
    report: SignedReport
    quote_body: bytes

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate (without the serial-0 deprecation warning)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_der_x509_certificate(self.cert_der)

    @property
    def cert_pem(self) -> bytes:
        """The certificate as PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (test material only)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def spki_sha256(self) -> bytes:
        """SHA-256 of the DER SubjectPublicKeyInfo (what `Evidence.spki_sha256` reports)."""
        return hashlib.sha256(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).digest()


Binding = Literal["seng", "wrong", "zero"]
Encoding = Literal["base64", "upstream"]


def _extension_values(report: SignedReport, ca_der: bytes, encoding: Encoding) -> dict[int, bytes]:
    if encoding == "base64":
        return {
            2: base64.b64encode(report.body),
            3: base64.b64encode(ca_der),
            4: base64.b64encode(report.signing_cert_der),
            5: base64.b64encode(report.signature),
        }
    pem = serialization.Encoding.PEM
    return {
        2: report.body,
        3: x509.load_der_x509_certificate(ca_der).public_bytes(pem),
        4: x509.load_der_x509_certificate(report.signing_cert_der).public_bytes(pem),
        5: base64.b64encode(report.signature),
    }


def mint_ratls_certificate(
    ias: TestIas,
    *,
    key_type: KeyType = "rsa-2048",
    key: PrivateKey | None = None,
    mr_enclave: bytes = DEFAULT_MR_ENCLAVE,
    mr_signer: bytes = DEFAULT_MR_SIGNER,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    flags: int = PRODUCTION_FLAGS,
    xfrm: int = 0x3,
    cpu_svn: bytes = bytes(16),
    status: str = "OK",
    version: int | None = 4,
    advisory_ids: Sequence[str] | None = None,
    report_timestamp: datetime | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    encoding: Encoding = "base64",
    binding: Binding = "seng",
    report_data: bytes | None = None,
    report: SignedReport | None = None,
    extension_values: Mapping[int, bytes] | None = None,
    omit: Iterable[int] = (),
    duplicate: Iterable[int] = (),
    critical: Iterable[int] = (),
    extra_extensions: Sequence[tuple[x509.ObjectIdentifier, bytes, bool]] = (),
    wrong_self_signature: bool = False,
    serial_zero: bool = True,
) -> MintedCertificate:
    """Mint a SENG RA-TLS certificate; the defaults give a genuine one.

    Times: the certificate is valid from `not_before` (default: now - 1 minute) for 365 days
    (`not_after`); the report is timestamped `report_timestamp` (default: `not_before`).
    Broken variants: `binding` "wrong"/"zero" (report_data not bound to the key), `report_data`
    (explicit), `report` (a pre-signed report), `extension_values` (raw values of .2-.5 by
    number), `omit` / `duplicate` / `critical` (extension numbers 2-5), `extra_extensions`
    (OID, raw value, critical), `encoding="upstream"` (raw JSON / PEM values),
    `wrong_self_signature` (signed by another key of the same kind).
    """
    key = key or generate_key(key_type)
    start = not_before or (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0)
    end = not_after or start + timedelta(seconds=31_536_000)
    if report_data is None:
        if binding == "seng":
            report_data = seng_report_data(key)
        elif binding == "wrong":
            report_data = hashlib.sha256(b"another key" + secrets.token_bytes(16)).digest()
            report_data += bytes(32)
        else:
            report_data = bytes(64)
    quote_body = make_quote_body(
        report_data=report_data,
        mr_enclave=mr_enclave,
        mr_signer=mr_signer,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        flags=flags,
        xfrm=xfrm,
        cpu_svn=cpu_svn,
    )
    if report is None:
        report = ias.sign_report(
            quote_body,
            status=status,
            timestamp=report_timestamp or start,
            version=version,
            advisory_ids=advisory_ids,
        )
    values = _extension_values(report, ias.ca_der, encoding)
    values.update(extension_values or {})
    omitted = set(omit)
    duplicated = set(duplicate)
    critical_set = set(critical)

    builder = (
        x509.CertificateBuilder()
        .subject_name(SENG_SUBJECT)
        .issuer_name(SENG_SUBJECT)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for number in (2, 3, 4, 5):
        if number in omitted:
            continue
        builder = builder.add_extension(
            x509.UnrecognizedExtension(EXTENSION_INDEX[number], values[number]),
            critical=number in critical_set,
        )
    for number in sorted(duplicated):
        placeholder = x509.ObjectIdentifier(f"1.2.840.113741.1337.{_PLACEHOLDER_ARC + number}")
        builder = builder.add_extension(
            x509.UnrecognizedExtension(placeholder, values[number]), critical=False
        )
    for oid, value, is_critical in extra_extensions:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), is_critical)
    cert_der = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def patch(tbs: bytes) -> bytes:
        for number in duplicated:
            fake = _OID_PREFIX + bytes([_PLACEHOLDER_ARC + number])
            if tbs.count(fake) != 1:
                raise RuntimeError("placeholder OID not unique; mint again")
            tbs = tbs.replace(fake, _OID_PREFIX + bytes([number]))
        return _set_serial_zero(tbs) if serial_zero else tbs

    if duplicated or serial_zero or wrong_self_signature:
        signer = _same_kind(key) if wrong_self_signature else key
        cert_der = resign_with_patched_tbs(cert_der, signer, patch)
    return MintedCertificate(cert_der, key, key_type_of(key), report, quote_body)


def _same_kind(key: PrivateKey) -> PrivateKey:
    if isinstance(key, rsa.RSAPrivateKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=key.key_size)
    return ec.generate_private_key(key.curve)


def mint_plain_certificate(
    key: PrivateKey | None = None, *, common_name: str = "impostor"
) -> MintedCertificate:
    """A self-signed certificate without any SGX extension (an impostor's TLS leaf)."""
    key = key or generate_key("ec-p256")
    name = _name(common_name)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    empty = SignedReport(b"", b"", b"")
    return MintedCertificate(
        cert.public_bytes(serialization.Encoding.DER), key, key_type_of(key), empty, b""
    )
