"""What the verifier trusts and how strictly it judges time: `TrustConfig`.

The IAS report signing CA certificate(s) are the only trust anchors for EPID attestation. They
come from the configuration (or the copy of Intel's root shipped in this package) and are
loaded once; the CA certificate an enclave carries in its RA-TLS extension .3 is never trusted.

DCAP (ECDSA) evidence is anchored on the Intel SGX Root CA, pinned by its public key: three
encodings of that root exist (different validity, pathlen and signature bytes, one key), and
the root certificate carried in the evidence is never the anchor. `TrustConfig.sgx_roots` is
empty unless DCAP is configured, and then DCAP certificates are refused as before.
This module reads the anchor files; `collateral.py` reads collateral files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict, Unpack

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sengd.attestation.cache import LruCache

if TYPE_CHECKING:
    from sengd.attestation.collateral import CollateralStore
    from sengd.attestation.evidence import CachedResult
    from sengd.attestation.ias import ChainResult

IasChainTime = Literal["now", "report"]

BUILTIN_IAS_ROOT_NAME = "Intel_SGX_Attestation_RootCA.pem"
BUILTIN_IAS_ROOT_SHA256 = "7b42e41ec43b91db834a065de4f98a13c44d695570e839cfa8921e584e40735d"
"""SHA-256 of the DER of Intel's "Intel SGX Attestation Report Signing CA" (PROTOCOL.md §4.3)."""

BUILTIN_SGX_ROOT_NAME = "Intel_SGX_RootCA_2049.pem"
BUILTIN_SGX_ROOT_KEY_SHA256 = "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e"
"""SHA-256 of the DER SubjectPublicKeyInfo of the Intel SGX Root CA (every edition has it)."""

DEFAULT_CLOCK_SKEW = timedelta(minutes=5)


class TrustConfigError(ValueError):
    """A trust anchor could not be loaded; the message names the source and the reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class IasAnchor:
    """One trusted IAS report signing CA certificate and its validity period (UTC)."""

    certificate: x509.Certificate
    der: bytes
    sha256: bytes
    source: str
    not_before: datetime
    not_after: datetime


def anchor_from_certificate(cert: x509.Certificate, source: str) -> IasAnchor:
    """Check that `cert` can serve as an IAS report signing CA and wrap it.

    Requirements: basicConstraints CA:TRUE, keyCertSign if keyUsage is present, an RSA key of
    at least 2048 bits (IAS signs with RSA; Intel's root is RSA-3072).
    """
    try:
        _ = (cert.subject, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.public_key())
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
        raise TrustConfigError(source, f"unreadable certificate ({exc})") from None
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise TrustConfigError(source, "not a CA certificate (no basicConstraints)") from None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise TrustConfigError(source, f"unreadable extensions: {exc}") from None
    if not bc.ca:
        raise TrustConfigError(source, "not a CA certificate (basicConstraints CA:FALSE)")
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None
    if ku is not None and not ku.key_cert_sign:
        raise TrustConfigError(source, "keyUsage does not allow certificate signing")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise TrustConfigError(source, "an IAS report signing CA must have an RSA key >= 2048 bits")
    der = cert.public_bytes(Encoding.DER)
    return IasAnchor(
        cert,
        der,
        hashlib.sha256(der).digest(),
        source,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


def anchors_from_pem(pem: bytes, source: str = "<pem>") -> tuple[IasAnchor, ...]:
    """Every certificate in a PEM bundle, each checked by `anchor_from_certificate`."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except (ValueError, x509.InvalidVersion) as exc:
        raise TrustConfigError(source, f"no readable PEM certificate: {exc}") from None
    return tuple(anchor_from_certificate(c, f"{source}[{i}]") for i, c in enumerate(certs))


def load_anchors(paths: Sequence[Path | str]) -> tuple[IasAnchor, ...]:
    """Load PEM (or single DER) anchor files; every error names the file."""
    anchors: list[IasAnchor] = []
    for path in paths:
        source = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise TrustConfigError(source, exc.strerror or str(exc)) from None
        if b"-----BEGIN" in data:
            anchors.extend(anchors_from_pem(data, source))
        else:
            try:
                cert = x509.load_der_x509_certificate(data)
            except (ValueError, x509.InvalidVersion) as exc:
                raise TrustConfigError(source, f"neither PEM nor DER certificate: {exc}") from None
            anchors.append(anchor_from_certificate(cert, source))
    if not anchors:
        raise TrustConfigError(", ".join(map(str, paths)) or "<none>", "no trust anchor given")
    return tuple(anchors)


def builtin_anchors() -> tuple[IasAnchor, ...]:
    """Intel's "Intel SGX Attestation Report Signing CA", shipped inside this package."""
    ref = resources.files("sengd.attestation").joinpath("anchors", BUILTIN_IAS_ROOT_NAME)
    source = f"<built-in {BUILTIN_IAS_ROOT_NAME}>"
    anchors = anchors_from_pem(ref.read_bytes(), source)
    if [a.sha256.hex() for a in anchors] != [BUILTIN_IAS_ROOT_SHA256]:
        raise TrustConfigError(source, "the packaged Intel root has been altered")
    return anchors


@dataclass(frozen=True)
class SgxRootAnchor:
    """A pinned DCAP root: the key is what is trusted; the certificate gives name and validity.

    A chain is accepted if its top certificate is signed by `public_key` and names
    `subject_der` as its issuer; a root certificate carried in the evidence is accepted only if
    it has exactly this key and its self-signature verifies (any edition of Intel's root).
    """

    certificate: x509.Certificate
    public_key: ec.EllipticCurvePublicKey
    spki_der: bytes
    key_sha256: bytes
    subject_der: bytes
    source: str
    not_before: datetime
    not_after: datetime


def sgx_root_from_certificate(cert: x509.Certificate, source: str) -> SgxRootAnchor:
    """Check that `cert` can serve as a DCAP root (self-signed EC P-256 CA) and pin its key."""
    try:
        key = cert.public_key()
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        subject, issuer = cert.subject.public_bytes(), cert.issuer.public_bytes()
    except x509.ExtensionNotFound:
        raise TrustConfigError(source, "not a CA certificate (no basicConstraints)") from None
    except (ValueError, x509.DuplicateExtension, UnsupportedAlgorithm) as exc:
        raise TrustConfigError(source, f"unreadable certificate ({exc})") from None
    if not bc.ca:
        raise TrustConfigError(source, "not a CA certificate (basicConstraints CA:FALSE)")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise TrustConfigError(source, "an SGX root CA must have an EC P-256 key")
    if subject != issuer:
        raise TrustConfigError(source, "an SGX root CA must be self-issued")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise TrustConfigError(source, "the self-signature does not verify") from None
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return SgxRootAnchor(
        certificate=cert,
        public_key=key,
        spki_der=spki,
        key_sha256=hashlib.sha256(spki).digest(),
        subject_der=subject,
        source=source,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def sgx_roots_from_pem(pem: bytes, source: str = "<pem>") -> tuple[SgxRootAnchor, ...]:
    """Every certificate in a PEM bundle as a DCAP root (see `sgx_root_from_certificate`)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except (ValueError, x509.InvalidVersion) as exc:
        raise TrustConfigError(source, f"no readable PEM certificate: {exc}") from None
    return tuple(sgx_root_from_certificate(c, f"{source}[{i}]") for i, c in enumerate(certs))


def load_sgx_roots(path: Path | str | None) -> tuple[SgxRootAnchor, ...]:
    """The DCAP roots in a PEM (or DER) file; `None` gives Intel's root built into sengd."""
    if path is None:
        return builtin_sgx_roots()
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TrustConfigError(source, exc.strerror or str(exc)) from None
    if b"-----BEGIN" in data:
        return sgx_roots_from_pem(data, source)
    try:
        cert = x509.load_der_x509_certificate(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise TrustConfigError(source, f"neither PEM nor DER certificate: {exc}") from None
    return (sgx_root_from_certificate(cert, source),)


def builtin_sgx_roots() -> tuple[SgxRootAnchor, ...]:
    """Intel's "Intel SGX Root CA" (2049 edition), shipped inside this package."""
    ref = resources.files("sengd.attestation").joinpath("anchors", BUILTIN_SGX_ROOT_NAME)
    source = f"<built-in {BUILTIN_SGX_ROOT_NAME}>"
    roots = sgx_roots_from_pem(ref.read_bytes(), source)
    if [r.key_sha256.hex() for r in roots] != [BUILTIN_SGX_ROOT_KEY_SHA256]:
        raise TrustConfigError(source, "the packaged Intel SGX Root CA has been altered")
    return roots


class TrustOptions(TypedDict, total=False):
    """The knobs of `TrustConfig` besides its anchors (see the fields there)."""

    ias_chain_time: IasChainTime
    max_report_age: timedelta | None
    clock_skew: timedelta
    accept_upstream_encoding: bool
    reject_debug: bool
    chain_cache_size: int
    cert_cache_size: int
    sgx_roots: tuple[SgxRootAnchor, ...]
    collateral: CollateralStore | None
    dcap_require_crls: bool
    dcap_require_qe_identity: bool
    dcap_cache_size: int


@dataclass(frozen=True)
class TrustConfig:
    """Trust anchors and time rules for verification. Build once; share freely.

    - `ias_anchors`: the IAS report signing CA certificate(s). The signing certificate of a
      report must be issued directly by one of them.
    - `ias_chain_time`: the time at which the IAS signing chain must be valid: `"now"` (the
      verification time) or `"report"` (the report's own signed timestamp; needed to accept
      genuine reports after Intel's signing certificate expired on 2026-11-20).
    - `max_report_age`: if set, a report whose timestamp is older than `now - max_report_age`
      is rejected (`report-too-old`).
    - `clock_skew`: tolerance applied to the RA-TLS certificate's validity period and to
      report timestamps in the future (`report-from-future`).
    - `accept_upstream_encoding`: also accept the later upstream sgx-ra-tls encoding (raw JSON
      body and PEM certificates in extensions .2-.4) besides the base64 one SENG clients use.
    - `reject_debug`: reject debug enclaves in the verifier already (`debug-enclave`). Off by
      default because the policy decides debug per allowlist entry (and denies it by default).
    - `chain_cache_size` / `cert_cache_size`: capacity of the caches below (0 disables one).
    - `sgx_roots`: the pinned DCAP root(s) (Intel SGX Root CA). Empty: DCAP evidence is refused
      (`no-sgx-extension`, naming DCAP), as before DCAP support existed.
    - `collateral`: where DCAP collateral comes from besides the certificate itself (a
      `CollateralStore` fed by a collateral directory and/or a PCCS; None = embedded only).
    - `dcap_require_crls` / `dcap_require_qe_identity`: refuse DCAP evidence when no Root CA
      CRL and PCK CRL, or no QE identity, is available (`collateral-missing`). Both default to
      True; switching one off is for inspecting legacy evidence (2019 sgx-ra-tls certificates
      predate QE identities), never for admission.
    - `dcap_cache_size`: capacity of the DCAP caches (verified chains and collateral items).

    Each instance owns caches of time-independent results: IAS chain checks per signing
    certificate, whole-certificate verifications per SHA-256 of the certificate DER, DCAP
    certificate chains and collateral items per SHA-256 of their bytes. Time conditions are
    re-checked on every call.
    """

    ias_anchors: tuple[IasAnchor, ...]
    ias_chain_time: IasChainTime = "now"
    max_report_age: timedelta | None = None
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    accept_upstream_encoding: bool = True
    reject_debug: bool = False
    chain_cache_size: int = 64
    cert_cache_size: int = 1024
    sgx_roots: tuple[SgxRootAnchor, ...] = ()
    collateral: CollateralStore | None = field(default=None, compare=False, hash=False)
    dcap_require_crls: bool = True
    dcap_require_qe_identity: bool = True
    dcap_cache_size: int = 256
    chain_cache: LruCache[bytes, ChainResult] = field(
        init=False, repr=False, compare=False, hash=False
    )
    cert_cache: LruCache[bytes, CachedResult] = field(
        init=False, repr=False, compare=False, hash=False
    )
    dcap_cache: LruCache[bytes, object] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.ias_anchors:
            raise ValueError("TrustConfig needs at least one IAS trust anchor")
        if self.ias_chain_time not in ("now", "report"):
            raise ValueError('ias_chain_time must be "now" or "report"')
        if self.clock_skew < timedelta(0):
            raise ValueError("clock_skew must not be negative")
        if self.max_report_age is not None and self.max_report_age <= timedelta(0):
            raise ValueError("max_report_age must be positive (or None for no limit)")
        object.__setattr__(self, "chain_cache", LruCache(self.chain_cache_size))
        object.__setattr__(self, "cert_cache", LruCache(self.cert_cache_size))
        object.__setattr__(self, "dcap_cache", LruCache(self.dcap_cache_size))

    @classmethod
    def builtin(cls, **options: Unpack[TrustOptions]) -> TrustConfig:
        """Trust Intel's production IAS root shipped with seng-gateway."""
        return cls(builtin_anchors(), **options)

    @classmethod
    def from_pem(
        cls, pem: bytes, source: str = "<pem>", **options: Unpack[TrustOptions]
    ) -> TrustConfig:
        """Trust the CA certificate(s) in `pem`."""
        return cls(anchors_from_pem(pem, source), **options)

    @classmethod
    def load(
        cls, paths: Sequence[Path | str] | Path | str | None = None, **options: Unpack[TrustOptions]
    ) -> TrustConfig:
        """Trust the anchors in `paths` (PEM or DER files); `None` means the built-in Intel root."""
        if paths is None:
            return cls.builtin(**options)
        if isinstance(paths, str | Path):
            paths = [paths]
        return cls(load_anchors(paths), **options)

    def clear_caches(self) -> None:
        """Forget cached results (benchmarks use this to measure cold verification)."""
        self.chain_cache.clear()
        self.cert_cache.clear()
        self.dcap_cache.clear()

    @property
    def dcap_enabled(self) -> bool:
        """Whether DCAP evidence can be verified at all (a DCAP root is configured)."""
        return bool(self.sgx_roots)


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime; a naive value is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
