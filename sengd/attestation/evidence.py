"""The verified facts an RA-TLS certificate establishes about the enclave behind it, and
`verify_certificate()`, the attestation entry point (PROTOCOL.md §3.4).

Verification order (the first failing check gives the reason):

1. one certificate only (`chain-not-leaf`), parseable DER (`cert-malformed`);
2. the four SENG extensions, each once, decodable (`no-sgx-extension`, `extension-missing`,
   `extension-duplicated`, `extension-malformed`, `cert-critical-extension`);
3. the certificate key: RSA >= 2048 bits or EC P-256/P-384 (`key-unsupported`), and the
   self-signature (`cert-signature-invalid`);
4. the IAS report: signing chain, signature, content, status (see `sengd.attestation.ias`);
5. key binding: SHA-256(SPKI BIT STRING contents) == report_data[0:32] (`key-binding-mismatch`);
6. optionally no debug enclaves (`debug-enclave`, if the trust config says so);
7. time: the certificate's validity with clock skew (`cert-not-yet-valid`, `cert-expired`),
   the IAS chain at `now` or at the report time, report freshness.

Steps 1-6 depend only on the bytes and the trust config and are cached per certificate
(SHA-256 of the DER) in the `TrustConfig`; step 7 runs on every call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.ias import IasReport, VerifiedChain, check_report_time, verify_report_static
from sengd.attestation.quote import SGX_FLAG_DEBUG
from sengd.attestation.ratls import (
    MAX_CERT_BYTES,
    certificate_key,
    check_key_binding,
    check_self_signature,
    check_validity,
    extract_payload,
    parse_certificate,
)
from sengd.attestation.trust import TrustConfig, as_utc

SCHEME_EPID_IAS = "epid-ias"

__all__ = ["SGX_FLAG_DEBUG", "Attributes", "Evidence", "StaticResult", "verify_certificate"]


@dataclass(frozen=True, slots=True)
class Attributes:
    """SGX enclave attributes from the report body (`sgx_attributes_t`)."""

    flags: int
    xfrm: int

    @property
    def debug(self) -> bool:
        """True for a debug enclave: its memory can be read by the host, so it proves nothing."""
        return bool(self.flags & SGX_FLAG_DEBUG)


@dataclass(frozen=True, slots=True)
class Evidence:
    """What was verified about one enclave. Every field was checked; nothing here is a claim.

    Measurements are the raw 32 bytes in report order (hex of these bytes is what logs and the
    allowlist show). `quote_body` is the 432-byte quote prefix both tunnels of one enclave must
    share (PROTOCOL.md §1.4); `spki_sha256` is the SHA-256 of the certificate's DER
    SubjectPublicKeyInfo, a fingerprint for display and pairing.
    """

    scheme: str  # "epid-ias" or "dcap"
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    cpu_svn: bytes
    misc_select: int
    attributes: Attributes
    report_data: bytes
    quote_body: bytes
    quote_status: str  # IAS isvEnclaveQuoteStatus, or the DCAP TCB status
    tcb_status: str | None  # DCAP TCB status; None for EPID
    advisory_ids: tuple[str, ...]
    report_id: str
    report_timestamp: datetime  # timezone-aware UTC
    key_type: str  # "rsa-2048", "rsa-3072", "ec-p256", "ec-p384", ...
    spki_sha256: bytes
    report_version: int | None = None  # IAS API version; None for v2 reports (no field)
    config_svn: int = 0
    ias_signing_cert_sha256: bytes = b""
    cert_not_before: datetime | None = None
    cert_not_after: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable view (bytes as lowercase hex, times as ISO 8601)."""

        def when(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "scheme": self.scheme,
            "mr_enclave": self.mr_enclave.hex(),
            "mr_signer": self.mr_signer.hex(),
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "config_svn": self.config_svn,
            "cpu_svn": self.cpu_svn.hex(),
            "misc_select": self.misc_select,
            "attributes": {
                "flags": f"0x{self.attributes.flags:x}",
                "xfrm": f"0x{self.attributes.xfrm:x}",
                "debug": self.attributes.debug,
            },
            "report_data": self.report_data.hex(),
            "quote_status": self.quote_status,
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "report_id": self.report_id,
            "report_timestamp": when(self.report_timestamp),
            "report_version": self.report_version,
            "key_type": self.key_type,
            "spki_sha256": self.spki_sha256.hex(),
            "ias_signing_cert_sha256": self.ias_signing_cert_sha256.hex(),
            "cert_not_before": when(self.cert_not_before),
            "cert_not_after": when(self.cert_not_after),
        }


@dataclass(frozen=True, slots=True)
class StaticResult:
    """Everything about one certificate that does not depend on the clock."""

    evidence: Evidence
    report: IasReport
    chain: VerifiedChain
    not_before: datetime
    not_after: datetime


def _single_certificate(cert: bytes | bytearray | memoryview | Sequence[bytes]) -> bytes:
    if isinstance(cert, bytes | bytearray | memoryview):
        return bytes(cert)
    try:
        chain = list(cert)
    except TypeError:
        raise AttestationError(Reason.CERT_MALFORMED, "no certificate given") from None
    if len(chain) > 1:
        raise AttestationError(
            Reason.CHAIN_NOT_LEAF,
            f"the client sent {len(chain)} certificates; an RA-TLS client sends only its "
            "self-signed leaf, and evidence is never taken from any other certificate",
        )
    if not chain or not isinstance(chain[0], bytes | bytearray | memoryview):
        raise AttestationError(Reason.CERT_MALFORMED, "no certificate given")
    return bytes(chain[0])


def _verify_static(cert_der: bytes, trust: TrustConfig) -> StaticResult:
    parsed = parse_certificate(cert_der)
    payload = extract_payload(parsed.cert, accept_upstream=trust.accept_upstream_encoding)
    key = certificate_key(parsed)
    check_self_signature(parsed, key)
    report, chain = verify_report_static(
        payload.report_body, payload.signature, payload.signing_cert_der, trust
    )
    quote = report.quote
    check_key_binding(key.key_bits, quote.report_data)
    if trust.reject_debug and quote.debug:
        raise AttestationError(
            Reason.DEBUG_ENCLAVE, "the enclave runs in debug mode (its memory is not protected)"
        )
    not_before, not_after = parsed.not_before, parsed.not_after
    evidence = Evidence(
        scheme=SCHEME_EPID_IAS,
        mr_enclave=quote.mr_enclave,
        mr_signer=quote.mr_signer,
        isv_prod_id=quote.isv_prod_id,
        isv_svn=quote.isv_svn,
        cpu_svn=quote.cpu_svn,
        misc_select=quote.misc_select,
        attributes=Attributes(quote.flags, quote.xfrm),
        report_data=quote.report_data,
        quote_body=quote.raw,
        quote_status=report.quote_status,
        tcb_status=None,
        advisory_ids=report.advisory_ids,
        report_id=report.report_id,
        report_timestamp=report.timestamp,
        key_type=key.key_type,
        spki_sha256=hashlib.sha256(key.spki_der).digest(),
        report_version=report.version,
        config_svn=quote.config_svn,
        ias_signing_cert_sha256=chain.signing_cert_sha256,
        cert_not_before=not_before,
        cert_not_after=not_after,
    )
    return StaticResult(evidence, report, chain, not_before, not_after)


def _check_time(result: StaticResult, trust: TrustConfig, now: datetime) -> None:
    check_validity(result.not_before, result.not_after, now, trust.clock_skew)
    check_report_time(result.report, result.chain, trust, now)


def verify_certificate(
    cert_der: bytes | bytearray | memoryview | Sequence[bytes], trust: TrustConfig, now: datetime
) -> Evidence:
    """Verify a SENG RA-TLS client certificate and return what it proves.

    `cert_der` is the DER leaf, or the whole chain the peer sent (refused unless it is exactly
    one certificate: `chain-not-leaf`). `now` is the time of verification (naive = UTC). Raises
    `AttestationError` and nothing else, whatever the input. See the module docstring for the
    order of checks; a cache hit re-checks every time-dependent condition against `now`.
    """
    der = _single_certificate(cert_der)
    if len(der) > MAX_CERT_BYTES:
        raise AttestationError(
            Reason.CERT_MALFORMED, f"certificate is {len(der)} bytes (limit {MAX_CERT_BYTES})"
        )
    now = as_utc(now)
    digest = hashlib.sha256(der).digest()
    result = trust.cert_cache.get(digest)
    if result is None:
        result = _verify_static(der, trust)
        trust.cert_cache.put(digest, result)
    _check_time(result, trust, now)
    return result.evidence
