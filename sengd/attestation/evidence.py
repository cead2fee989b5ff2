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

DCAP certificates (a quote in .6 and none of .2-.5; `sengd.attestation.dcap_ratls`) take the
DCAP path when the trust config pins an SGX root (`TrustConfig.sgx_roots`):

1. as above; 2. the DCAP extensions (`extension-*`, `cert-critical-extension`); 3. as above;
4. the quote, the embedded collateral items, the PCK chain and the quote's signatures
   (`sengd.attestation.dcap` steps 1-3, `collateral-*` for a bad embedded item);
5. key binding as the certificate form defines it (`key-binding-mismatch`);
6. optionally no debug enclaves;
7. per call: the certificate's validity with clock skew, then the quote against the embedded
   collateral and the trust config's `CollateralStore` at `now` (`dcap` steps 4-8).

Steps 1-6 are cached per certificate like the EPID ones. Without an SGX root a DCAP
certificate is refused with `no-sgx-extension`, as before DCAP support.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sengd.attestation.collateral import EMPTY, Collateral, PckRequest, verify_raw
from sengd.attestation.dcap import DcapVerdict, QuoteFacts, evaluate, quote_facts
from sengd.attestation.dcap_quote import (
    CERT_DATA_PCK_CHAIN,
    CERT_DATA_PPID_RSA3072,
    DcapQuote,
    parse_dcap_quote,
)
from sengd.attestation.dcap_ratls import (
    CertForm,
    check_dcap_key_binding,
    extract_dcap_payload,
    has_dcap_evidence,
)
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.ias import IasReport, VerifiedChain, check_report_time, verify_report_static
from sengd.attestation.quote import SGX_FLAG_DEBUG
from sengd.attestation.ratls import (
    MAX_CERT_BYTES,
    CertKey,
    ParsedCertificate,
    certificate_key,
    check_key_binding,
    check_self_signature,
    check_validity,
    extract_payload,
    parse_certificate,
)
from sengd.attestation.trust import TrustConfig, as_utc

SCHEME_EPID_IAS = "epid-ias"
SCHEME_DCAP = "dcap"

__all__ = [
    "SGX_FLAG_DEBUG",
    "Attributes",
    "CachedResult",
    "DcapDetails",
    "DcapStatic",
    "Evidence",
    "StaticResult",
    "dcap_evidence",
    "verify_certificate",
]


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
class DcapDetails:
    """What a DCAP verification established beyond the common fields (for display and logs)."""

    form: str  # "gramine", "sgx-ra-tls" or "quote" (a raw quote, not a certificate)
    fmspc: bytes
    pce_id: bytes
    tcb_components: tuple[int, ...]
    pce_svn: int
    platform_status: str  # the TCB info's verdict on the platform alone
    qe_status: str | None  # the QE identity's verdict on the quoting enclave (None: not checked)
    tcb_evaluation_number: int
    tcb_date: datetime | None
    tcb_info_next_update: datetime
    qe_identity_next_update: datetime | None
    cert_data_type: int
    pck_cert_sha256: bytes
    collateral_sources: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable view."""

        def when(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "form": self.form,
            "fmspc": self.fmspc.hex(),
            "pce_id": self.pce_id.hex(),
            "tcb_components": list(self.tcb_components),
            "pce_svn": self.pce_svn,
            "platform_status": self.platform_status,
            "qe_status": self.qe_status,
            "tcb_evaluation_number": self.tcb_evaluation_number,
            "tcb_date": when(self.tcb_date),
            "tcb_info_next_update": when(self.tcb_info_next_update),
            "qe_identity_next_update": when(self.qe_identity_next_update),
            "cert_data_type": self.cert_data_type,
            "pck_cert_sha256": self.pck_cert_sha256.hex(),
            "collateral_sources": list(self.collateral_sources),
        }


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
    report_id: str  # IAS report id; for DCAP the SHA-256 of the quote (hex)
    report_timestamp: datetime  # aware UTC; for DCAP the issue date of the TCB info used
    key_type: str  # "rsa-2048", "rsa-3072", "ec-p256", "ec-p384", ...
    spki_sha256: bytes
    report_version: int | None = None  # IAS API version; None for v2 reports (no field)
    config_svn: int = 0
    ias_signing_cert_sha256: bytes = b""
    cert_not_before: datetime | None = None
    cert_not_after: datetime | None = None
    dcap: DcapDetails | None = None

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
            **({} if self.dcap is None else {"dcap": self.dcap.to_json()}),
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
    """Steps 1-6 of an EPID certificate (see the module docstring)."""
    return _verify_epid(parse_certificate(cert_der), trust)


def _verify_epid(parsed: ParsedCertificate, trust: TrustConfig) -> StaticResult:
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


@dataclass(frozen=True, slots=True)
class DcapStatic:
    """Everything about one DCAP certificate that depends neither on the clock nor on the
    verifier's own collateral. `facts` is None when the PCK certificate must come from the
    `CollateralStore` (a quote of certification data type 1-3 without .7/.8)."""

    form: CertForm
    quote: DcapQuote
    facts: QuoteFacts | None
    embedded: Collateral
    key: CertKey
    spki_sha256: bytes
    not_before: datetime
    not_after: datetime


CachedResult = StaticResult | DcapStatic
"""What `TrustConfig.cert_cache` holds per certificate."""


def _verify_dcap(parsed: ParsedCertificate, trust: TrustConfig) -> DcapStatic:
    payload = extract_dcap_payload(parsed.cert)
    key = certificate_key(parsed)
    check_self_signature(parsed, key)
    quote = parse_dcap_quote(payload.quote)
    embedded = verify_raw(payload.embedded, trust.sgx_roots, trust.dcap_cache)
    facts = None
    if quote.cert_data_type == CERT_DATA_PCK_CHAIN or embedded.pck_chains:
        facts = quote_facts(quote, trust.sgx_roots, embedded.pck_chains, trust.dcap_cache)
    check_dcap_key_binding(payload.form, key.spki_der, key.key_bits, quote.report.report_data)
    if trust.reject_debug and quote.report.debug:
        raise AttestationError(
            Reason.DEBUG_ENCLAVE, "the enclave runs in debug mode (its memory is not protected)"
        )
    return DcapStatic(
        form=payload.form,
        quote=quote,
        facts=facts,
        embedded=embedded,
        key=key,
        spki_sha256=hashlib.sha256(key.spki_der).digest(),
        not_before=parsed.not_before,
        not_after=parsed.not_after,
    )


def _verify_any(cert_der: bytes, trust: TrustConfig) -> CachedResult:
    parsed = parse_certificate(cert_der)
    if trust.dcap_enabled and has_dcap_evidence(parsed.cert):
        return _verify_dcap(parsed, trust)
    return _verify_epid(parsed, trust)


def dcap_evidence(
    verdict: DcapVerdict,
    form: str,
    *,
    key_type: str = "",
    spki_sha256: bytes = b"",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    sources: tuple[str, ...] = (),
) -> Evidence:
    """The `Evidence` of a DCAP verdict (for a certificate, or a raw quote with `form="quote"`)."""
    quote, pck = verdict.facts.quote, verdict.facts.pck
    report, tcb = quote.report, verdict.tcb_info
    ext = pck.extensions
    details = DcapDetails(
        form=form,
        fmspc=ext.fmspc,
        pce_id=ext.pce_id,
        tcb_components=ext.tcb_components,
        pce_svn=ext.pce_svn,
        platform_status=verdict.platform_status,
        qe_status=verdict.qe_status,
        tcb_evaluation_number=tcb.info.evaluation_number,
        tcb_date=verdict.tcb_level.tcb_date,
        tcb_info_next_update=tcb.meta.next_update,
        qe_identity_next_update=None
        if verdict.qe_identity is None
        else verdict.qe_identity.meta.next_update,
        cert_data_type=quote.cert_data_type,
        pck_cert_sha256=pck.chain.leaf.sha256,
        collateral_sources=sources,
    )
    return Evidence(
        scheme=SCHEME_DCAP,
        mr_enclave=report.mr_enclave,
        mr_signer=report.mr_signer,
        isv_prod_id=report.isv_prod_id,
        isv_svn=report.isv_svn,
        cpu_svn=report.cpu_svn,
        misc_select=report.misc_select,
        attributes=Attributes(report.flags, report.xfrm),
        report_data=report.report_data,
        quote_body=quote.body,
        quote_status=verdict.status,
        tcb_status=verdict.status,
        advisory_ids=verdict.advisory_ids,
        report_id=quote.sha256.hex(),
        report_timestamp=tcb.meta.issue_date,
        key_type=key_type,
        spki_sha256=spki_sha256,
        report_version=quote.version,
        config_svn=report.config_svn,
        cert_not_before=not_before,
        cert_not_after=not_after,
        dcap=details,
    )


def _store_facts(static: DcapStatic, collateral: Collateral, trust: TrustConfig) -> QuoteFacts:
    """The PCK certificate of a type 1-3 quote from the verifier's own collateral."""
    try:
        return quote_facts(static.quote, trust.sgx_roots, collateral.pck_chains)
    except AttestationError as exc:
        ppid = static.quote.ppid
        store = trust.collateral
        if (
            exc.reason is Reason.COLLATERAL_MISSING
            and store is not None
            and ppid is not None
            and ppid.pce_id is not None
            and static.quote.cert_data_type == CERT_DATA_PPID_RSA3072
        ):
            store.want_pck(PckRequest(ppid.ppid, ppid.cpu_svn, ppid.pce_svn, ppid.pce_id))
        raise


def _judge_dcap(static: DcapStatic, trust: TrustConfig, now: datetime) -> Evidence:
    check_validity(static.not_before, static.not_after, now, trust.clock_skew)
    store = trust.collateral
    own = EMPTY if store is None else store.snapshot()
    collateral = static.embedded + own if not own.is_empty() else static.embedded
    facts = static.facts or _store_facts(static, collateral, trust)
    fmspc = facts.pck.extensions.fmspc
    if store is not None and fmspc not in own.fmspcs:
        store.want_tcb_info(fmspc)
    embedded_tcb = bool(static.embedded.tcb_infos)
    verdict = evaluate(
        facts,
        collateral,
        now,
        require_crls=trust.dcap_require_crls,
        require_qe_identity=trust.dcap_require_qe_identity,
        mismatch_is_error=embedded_tcb and fmspc not in own.fmspcs,
    )
    sources = ["certificate"] if not static.embedded.is_empty() else []
    if own is not EMPTY:
        sources.append("verifier")
    return dcap_evidence(
        verdict,
        static.form.value,
        key_type=static.key.key_type,
        spki_sha256=static.spki_sha256,
        not_before=static.not_before,
        not_after=static.not_after,
        sources=tuple(sources),
    )


def verify_certificate(
    cert_der: bytes | bytearray | memoryview | Sequence[bytes], trust: TrustConfig, now: datetime
) -> Evidence:
    """Verify an RA-TLS client certificate (SENG EPID, or DCAP in either form) and return
    what it proves.

    `cert_der` is the DER leaf, or the whole chain the peer sent (refused unless it is exactly
    one certificate: `chain-not-leaf`). `now` is the time of verification (naive = UTC). Raises
    `AttestationError` and nothing else, whatever the input. See the module docstring for the
    order of checks; a cache hit re-checks every time-dependent condition against `now`, and
    for DCAP evaluates the quote against the collateral available now. Never blocks: missing
    DCAP collateral is requested from the `CollateralStore` and reported as
    `collateral-missing`.
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
        result = _verify_any(der, trust)
        trust.cert_cache.put(digest, result)
    if isinstance(result, DcapStatic):
        return _judge_dcap(result, trust, now)
    _check_time(result, trust, now)
    return result.evidence
