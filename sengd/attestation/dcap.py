"""DCAP (ECDSA) quote verification: quote + collateral + time -> TCB status, or a reason.

Order of checks (the first failing one gives the reason):

1. parse the quote v3 (`dcap-quote-malformed`, `dcap-quote-unsupported`);
2. the PCK certificate chain, from the quote (type 5) or from collateral (types 1-3, the one
   whose key signed the QE report), up to a pinned SGX root (`pck-chain-untrusted`,
   `collateral-missing`), and its SGX extension (`pck-cert-malformed`);
3. the QE report is signed by the PCK key (`qe-report-signature-invalid`); its report_data is
   SHA-256(attestation key || QE authentication data) followed by 32 zero bytes
   (`qe-report-data-mismatch`); the header and ISV report body are signed by the attestation
   key (`quote-signature-invalid`);
   -- steps 1-3 need neither the clock nor collateral and are cached per certificate --
4. the PCK chain is valid at `now` (`pck-chain-expired`, `pck-chain-not-yet-valid`);
5. CRLs: the Root CA CRL and the CRL of the PCK's issuing CA, valid at `now`
   (`collateral-missing` if required and absent, `collateral-expired`,
   `collateral-not-yet-valid`); neither lists the PCK certificate or its CA (`pck-revoked`);
6. the QE identity (newest valid one): present if required, valid at `now`, its signer not
   revoked, and the QE report matches it (`qe-identity-mismatch`, `tcb-level-not-found`);
7. the TCB info of the PCK's FMSPC (newest valid one): present (`collateral-missing`), same
   PCE id (`tcb-info-mismatch`), valid at `now`, signer not revoked; the PCK's CPUSVN
   components and PCESVN reach one of its levels (`tcb-level-not-found`);
8. the platform and QE statuses converge (`tcb.converge`); Revoked is refused (`tcb-revoked`).

Collateral validity has no clock-skew allowance: Intel's windows are a month long and the
boundaries are Intel's. Whether a TCB status or advisory is acceptable is the policy's decision
(`sengd.policy`), not this module's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sengd.attestation.cache import LruCache
from sengd.attestation.collateral import (
    Collateral,
    SignedCollateral,
    VerifiedPck,
    VerifiedQeIdentity,
    VerifiedTcbInfo,
    cached_verification,
    ppid_key,
    verify_pck_chain,
)
from sengd.attestation.crl import VerifiedCrl
from sengd.attestation.dcap_quote import (
    CERT_DATA_PCK_CHAIN,
    CERT_DATA_PPID_CLEARTEXT,
    DcapQuote,
    parse_dcap_quote,
)
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.qe_identity import match_qe
from sengd.attestation.tcb import REVOKED, TcbLevel, converge, merge_advisories
from sengd.attestation.trust import SgxRootAnchor, TrustConfig, as_utc
from sengd.attestation.x509chain import ChainCert

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_P256 = ec.SECP256R1()
Item = TypeVar("Item", VerifiedTcbInfo, VerifiedQeIdentity)


@dataclass(frozen=True, slots=True)
class QuoteFacts:
    """A quote whose signatures verified, and the PCK chain that vouches for it."""

    quote: DcapQuote
    pck: VerifiedPck


@dataclass(frozen=True, slots=True)
class DcapVerdict:
    """A quote judged against collateral at one time. `status` is the converged TCB status."""

    facts: QuoteFacts
    tcb_info: VerifiedTcbInfo
    tcb_level: TcbLevel
    qe_identity: VerifiedQeIdentity | None
    qe_status: str | None
    status: str
    advisory_ids: tuple[str, ...]
    crls: tuple[VerifiedCrl, ...]

    @property
    def platform_status(self) -> str:
        """The TCB status of the platform alone (before the QE's status is applied)."""
        return self.tcb_level.status


def _signature(raw: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(_signature(signature), data, _ECDSA_SHA256)
    except (InvalidSignature, ValueError):
        return False
    return True


def pck_from_quote(
    quote: DcapQuote,
    anchors: Sequence[SgxRootAnchor],
    cache: LruCache[bytes, object] | None = None,
) -> VerifiedPck | None:
    """The PCK chain carried in the quote (certification data type 5), verified; else None.

    With a `cache`, a chain is verified once: every quote of one platform carries the same."""
    if quote.cert_data_type != CERT_DATA_PCK_CHAIN:
        return None
    return cached_verification(
        cache,
        (b"quote-pck", quote.cert_data),
        lambda: verify_pck_chain(quote.cert_data, anchors, "quote", urlencoded_ok=False),
    )


MAX_PCK_TRIES = 8
"""Signature checks spent at most on finding the PCK certificate of a quote without one."""


def _pck_candidates(quote: DcapQuote, candidates: Iterable[VerifiedPck]) -> list[VerifiedPck]:
    """The certificates that can belong to the quote, most specific first.

    Type 1 names its PPID in clear: only the certificate with that PPID. Types 2/3: the one a
    PCCS returned for this encrypted PPID, then certificates of unknown origin (the
    certificate's own .7, a collateral directory), never more than `MAX_PCK_TRIES`: a peer
    cannot make the verifier try every certificate it holds."""
    ppid = quote.ppid
    if ppid is None:
        return []
    if quote.cert_data_type == CERT_DATA_PPID_CLEARTEXT:
        return [c for c in candidates if c.extensions.ppid == ppid.ppid][:MAX_PCK_TRIES]
    key = ppid_key(ppid.ppid)
    pool = list(candidates)
    named = [c for c in pool if c.ppid_key == key]
    anonymous = [c for c in pool if c.ppid_key is None]
    return (named + anonymous)[:MAX_PCK_TRIES]


def select_pck(quote: DcapQuote, candidates: Iterable[VerifiedPck]) -> VerifiedPck | None:
    """The candidate whose key signed the QE report (types 1-3 name no certificate)."""
    for candidate in _pck_candidates(quote, candidates):
        if _verifies(
            candidate.chain.leaf.public_key, quote.qe_report_signature, quote.qe_report.raw
        ):
            return candidate
    return None


def check_signatures(quote: DcapQuote, pck: VerifiedPck) -> None:
    """Step 3: QE report by the PCK key, the QE's binding of the attestation key, ISV report."""
    if not _verifies(pck.chain.leaf.public_key, quote.qe_report_signature, quote.qe_report.raw):
        raise AttestationError(
            Reason.QE_REPORT_SIGNATURE_INVALID,
            "the QE report is not signed by the PCK certificate's key",
        )
    expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
    if not hmac.compare_digest(expected, quote.qe_report.report_data):
        raise AttestationError(
            Reason.QE_REPORT_DATA_MISMATCH,
            "the QE report does not bind the attestation key and QE authentication data",
        )
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(_P256, b"\x04" + quote.attestation_key)
    except ValueError:
        raise AttestationError(
            Reason.QUOTE_SIGNATURE_INVALID, "the attestation key is not a P-256 point"
        ) from None
    if not _verifies(key, quote.isv_signature, quote.signed_bytes):
        raise AttestationError(
            Reason.QUOTE_SIGNATURE_INVALID,
            "the enclave report is not signed by the quote's attestation key",
        )


def quote_facts(
    quote: DcapQuote,
    anchors: Sequence[SgxRootAnchor],
    pck_candidates: Sequence[VerifiedPck] = (),
    cache: LruCache[bytes, object] | None = None,
) -> QuoteFacts:
    """Steps 2-3. For quotes without a PCK chain, `pck_candidates` come from collateral."""
    pck = pck_from_quote(quote, anchors, cache)
    if pck is None:
        pck = select_pck(quote, pck_candidates)
        if pck is None:
            raise AttestationError(
                Reason.COLLATERAL_MISSING,
                f"the quote carries no PCK certificate (certification data type "
                f"{quote.cert_data_type}) and no PCK certificate at hand signed its QE report",
            )
    check_signatures(quote, pck)
    return QuoteFacts(quote, pck)


def _time_error(problem: tuple[str, str], expired: Reason, early: Reason) -> AttestationError:
    kind, message = problem
    return AttestationError(expired if kind == "expired" else early, message)


def _collateral_time_error(problem: tuple[str, str]) -> AttestationError:
    return _time_error(problem, Reason.COLLATERAL_EXPIRED, Reason.COLLATERAL_NOT_YET_VALID)


def _crls_for(
    crls: Sequence[VerifiedCrl], key: bytes, now: datetime, what: str, required: bool
) -> list[VerifiedCrl]:
    mine = [c for c in crls if c.issuer_spki == key]
    valid = [c for c in mine if c.invalid_at(now) is None]
    if valid:
        return valid
    if mine:
        newest = max(mine, key=lambda c: c.this_update)
        problem = newest.invalid_at(now)
        assert problem is not None
        raise _collateral_time_error(problem)
    if required:
        raise AttestationError(Reason.COLLATERAL_MISSING, f"no {what} is available")
    return []


def check_revocation(
    pck_chain_leaf: ChainCert,
    pck_issuer: ChainCert | None,
    anchor: SgxRootAnchor,
    collateral: Collateral,
    now: datetime,
    required: bool,
) -> tuple[list[VerifiedCrl], list[VerifiedCrl]]:
    """Step 5; returns the usable Root CA CRLs and PCK CRLs."""
    root = _crls_for(collateral.root_crls, anchor.spki_der, now, "Root CA CRL", required)
    if pck_issuer is None:
        pck = root
    else:
        pck = _crls_for(
            collateral.pck_crls,
            pck_issuer.spki_der,
            now,
            f"CRL of {pck_issuer.name!r}",
            required,
        )
        for crl in root:
            if pck_issuer.serial in crl.revoked:
                raise AttestationError(
                    Reason.PCK_REVOKED,
                    f"{pck_issuer.name!r} (serial 0x{pck_issuer.serial:x}) is revoked by the "
                    "Root CA CRL",
                )
    for crl in pck:
        if pck_chain_leaf.serial in crl.revoked:
            raise AttestationError(
                Reason.PCK_REVOKED,
                f"the PCK certificate (serial 0x{pck_chain_leaf.serial:x}) is revoked by the "
                f"CRL of {crl.issuer_name!r}",
            )
    return root, pck


def _newest_valid(
    items: Sequence[Item], meta: Callable[[Item], SignedCollateral], now: datetime, what: str
) -> Item | None:
    if not items:
        return None
    ordered = sorted(items, key=lambda i: (meta(i).evaluation_number, meta(i).issue_date))
    for item in reversed(ordered):
        if meta(item).invalid_at(now, what) is None:
            return item
    problem = meta(ordered[-1]).invalid_at(now, what)
    assert problem is not None
    raise _collateral_time_error(problem)


def _signer_not_revoked(
    meta: SignedCollateral, root_crls: Sequence[VerifiedCrl], what: str
) -> None:
    signer = meta.signer.leaf
    for crl in root_crls:
        if signer.serial in crl.revoked:
            raise AttestationError(
                Reason.COLLATERAL_CHAIN_UNTRUSTED,
                f"the {what} signer {signer.name!r} is revoked by the Root CA CRL",
            )


def _tcb_meta(item: VerifiedTcbInfo) -> SignedCollateral:
    return item.meta


def _qe_meta(item: VerifiedQeIdentity) -> SignedCollateral:
    return item.meta


def _select_tcb_info(
    facts: QuoteFacts, collateral: Collateral, now: datetime, mismatch_is_error: bool
) -> VerifiedTcbInfo:
    fmspc = facts.pck.extensions.fmspc
    mine = [t for t in collateral.tcb_infos if t.info.fmspc == fmspc]
    if not mine:
        if mismatch_is_error and collateral.tcb_infos:
            other = collateral.tcb_infos[0].info.fmspc.hex()
            raise AttestationError(
                Reason.TCB_INFO_MISMATCH,
                f"the TCB info is for FMSPC {other}; the PCK certificate says {fmspc.hex()}",
            )
        raise AttestationError(
            Reason.COLLATERAL_MISSING, f"no TCB info for FMSPC {fmspc.hex()} is available"
        )
    chosen = _newest_valid(mine, _tcb_meta, now, f"the TCB info of FMSPC {fmspc.hex()}")
    assert chosen is not None
    if chosen.info.pce_id != facts.pck.extensions.pce_id:
        raise AttestationError(
            Reason.TCB_INFO_MISMATCH,
            f"the TCB info is for PCE id {chosen.info.pce_id.hex()}; the PCK certificate says "
            f"{facts.pck.extensions.pce_id.hex()}",
        )
    return chosen


def evaluate(
    facts: QuoteFacts,
    collateral: Collateral,
    now: datetime,
    *,
    require_crls: bool = True,
    require_qe_identity: bool = True,
    mismatch_is_error: bool = False,
) -> DcapVerdict:
    """Steps 4-8 for verified quote facts, at `now` (aware UTC).

    `mismatch_is_error`: when there is no TCB info for the quote's FMSPC but there are others,
    say `tcb-info-mismatch` (collateral given for this quote) instead of `collateral-missing`.
    """
    chain = facts.pck.chain
    problem = chain.invalid_at(now)
    if problem is not None:
        raise _time_error(problem, Reason.PCK_CHAIN_EXPIRED, Reason.PCK_CHAIN_NOT_YET_VALID)
    root_crls, pck_crls = check_revocation(
        chain.leaf, chain.issuer, chain.anchor, collateral, now, require_crls
    )
    qe = _newest_valid(collateral.qe_identities, _qe_meta, now, "the QE identity")
    qe_status: str | None = None
    qe_advisories: tuple[str, ...] = ()
    if qe is None:
        if require_qe_identity:
            raise AttestationError(Reason.COLLATERAL_MISSING, "no QE identity is available")
    else:
        _signer_not_revoked(qe.meta, root_crls, "QE identity")
        match = match_qe(qe.identity, facts.quote.qe_report)
        qe_status, qe_advisories = match.status, match.advisory_ids
    tcb = _select_tcb_info(facts, collateral, now, mismatch_is_error)
    _signer_not_revoked(tcb.meta, root_crls, "TCB info")
    ext = facts.pck.extensions
    level = tcb.info.level_for(ext.tcb_components, ext.pce_svn)
    if level is None:
        raise AttestationError(
            Reason.TCB_LEVEL_NOT_FOUND,
            f"the platform's TCB (components {list(ext.tcb_components)}, PCESVN {ext.pce_svn}) "
            f"is below every level of the TCB info for FMSPC {ext.fmspc.hex()}",
        )
    status = converge(level.status, qe_status)
    if status == REVOKED:
        raise AttestationError(
            Reason.TCB_REVOKED,
            f"the TCB status is Revoked (platform {level.status}, QE {qe_status or '-'})",
        )
    crls = tuple({c.sha256: c for c in [*root_crls, *pck_crls]}.values())
    return DcapVerdict(
        facts=facts,
        tcb_info=tcb,
        tcb_level=level,
        qe_identity=qe,
        qe_status=qe_status,
        status=status,
        advisory_ids=merge_advisories(level.advisory_ids, qe_advisories),
        crls=crls,
    )


def verify_quote(
    quote_bytes: bytes, collateral: Collateral, trust: TrustConfig, now: datetime
) -> DcapVerdict:
    """Verify a raw quote completely against `collateral` (given for this quote) at `now`.

    Raises `AttestationError` only. A quote of certification data type 1-3 takes its PCK
    certificate from `collateral.pck_chains`. `trust.sgx_roots` must not be empty.
    """
    if not trust.sgx_roots:
        raise AttestationError(Reason.PCK_CHAIN_UNTRUSTED, "no SGX root is configured")
    quote = parse_dcap_quote(quote_bytes)
    facts = quote_facts(quote, trust.sgx_roots, collateral.pck_chains)
    return evaluate(
        facts,
        collateral,
        as_utc(now),
        require_crls=trust.dcap_require_crls,
        require_qe_identity=trust.dcap_require_qe_identity,
        mismatch_is_error=True,
    )
