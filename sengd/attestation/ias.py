"""EPID attestation verification reports from Intel's IAS (PROTOCOL.md §4).

A report is three things: the exact JSON body bytes, an RSA signature over them, and the IAS
signing certificate. Verification, in this order:

1. the signing certificate is issued directly by a configured IAS report signing CA
   (cached per signing certificate: every enclave presents the same one);
2. the signature is RSASSA-PKCS1-v1_5 / SHA-256 over the exact body bytes;
3. the body is parsed as strict JSON (no duplicate keys, no NaN) and its fields checked;
4. the quote status is one that can ever be accepted;
5. time: the chain at `now` or at the report's timestamp, then report freshness.

Steps 1-4 depend only on the bytes and the anchors; step 5 on the clock (`check_report_time`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

from sengd.attestation import der
from sengd.attestation.b64 import strict_b64decode
from sengd.attestation.errors import AttestationError, Reason
from sengd.attestation.quote import QUOTE_BODY_SIZE, Quote, parse_quote_body
from sengd.attestation.ratls import X509_PARSE_ERRORS
from sengd.attestation.trust import IasAnchor, TrustConfig, as_utc
from sengd.policy import DEFAULT_QUOTE_STATUSES, OPT_IN_QUOTE_STATUSES

MAX_REPORT_BYTES = 64 * 1024
"""Larger bodies are refused before any work (genuine reports are about 1-1.5 KB)."""

ACCEPTABLE_QUOTE_STATUSES: frozenset[str] = DEFAULT_QUOTE_STATUSES | OPT_IN_QUOTE_STATUSES
"""Statuses the verifier lets through to the policy; all others are never acceptable."""

REPORT_VERSIONS = frozenset({2, 3, 4, 5})
"""IAS API versions understood. API v2 reports carry no `version` field at all."""

_RSA_PKCS1_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
    }
)
_SIGNING_CERT_CRITICAL_OK = frozenset({ExtensionOID.KEY_USAGE, ExtensionOID.BASIC_CONSTRAINTS})
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?Z?"
)
_MAX_STRING = 4096


@dataclass(frozen=True, slots=True)
class IasReport:
    """A report whose signature and signing chain verified; fields as IAS stated them."""

    body: bytes
    report_id: str
    timestamp: datetime  # aware UTC
    version: int | None  # None for API v2 reports, which have no version field
    quote_status: str
    quote: Quote
    advisory_ids: tuple[str, ...]
    advisory_url: str | None
    nonce: str | None
    epid_pseudonym: str | None
    platform_info_blob: str | None
    signing_cert_sha256: bytes


@dataclass(frozen=True, slots=True)
class VerifiedChain:
    """The IAS signing certificate chains to `anchor`; usable between the two dates."""

    anchor: IasAnchor
    signing_key: rsa.RSAPublicKey
    signing_cert_sha256: bytes
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True, slots=True)
class ChainFailure:
    """A cached negative chain result (re-raised as a fresh `AttestationError`)."""

    reason: Reason
    message: str


ChainResult = VerifiedChain | ChainFailure


class _Untrusted(Exception):
    """Internal: the signing certificate cannot chain to an anchor (message says why)."""


def _describe_name(name: x509.Name) -> str:
    # Names come from untrusted input: keep them short and printable in messages.
    try:
        text = name.rfc4514_string()
    except ValueError:
        return "<unreadable name>"
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 120 else text[:117] + "..."


def _signing_key(cert: x509.Certificate) -> rsa.RSAPublicKey:
    """The signing certificate's key, after checking what the certificate says about itself."""
    try:
        extensions = list(cert.extensions)
        algorithm = cert.signature_algorithm_oid
        key = cert.public_key()
    except (ValueError, x509.DuplicateExtension, UnsupportedAlgorithm) as exc:
        raise _Untrusted(f"IAS signing certificate is unreadable ({exc})") from None
    if algorithm not in _RSA_PKCS1_SIGNATURES:
        raise _Untrusted("IAS signing certificate is not signed with RSA/SHA-2")
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise _Untrusted("IAS signing certificate must carry an RSA key of at least 2048 bits")
    for ext in extensions:
        if ext.critical and ext.oid not in _SIGNING_CERT_CRITICAL_OK:
            raise _Untrusted(f"IAS signing certificate has unknown critical extension {ext.oid}")
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise _Untrusted("IAS signing certificate is a CA certificate")
        if isinstance(ext.value, x509.KeyUsage) and not ext.value.digital_signature:
            raise _Untrusted("IAS signing certificate's keyUsage forbids signatures")
    return key


def _check_chain(signing_cert_der: bytes, anchors: tuple[IasAnchor, ...]) -> ChainResult:
    try:
        try:
            der.check_certificate_encoding(signing_cert_der)
            cert = x509.load_der_x509_certificate(signing_cert_der)
        except X509_PARSE_ERRORS as exc:
            raise _Untrusted(f"IAS signing certificate is not DER ({exc})") from None
        key = _signing_key(cert)
        for anchor in anchors:
            if anchor.certificate.subject != cert.issuer:
                continue
            try:
                cert.verify_directly_issued_by(anchor.certificate)
            except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
                continue
            return VerifiedChain(
                anchor=anchor,
                signing_key=key,
                signing_cert_sha256=hashlib.sha256(signing_cert_der).digest(),
                not_before=max(cert.not_valid_before_utc, anchor.not_before),
                not_after=min(cert.not_valid_after_utc, anchor.not_after),
            )
        raise _Untrusted(
            "IAS signing certificate is not issued by a trusted IAS report signing CA "
            f"(issuer {_describe_name(cert.issuer)})"
        )
    except _Untrusted as exc:
        return ChainFailure(Reason.IAS_CHAIN_UNTRUSTED, str(exc))
    except (
        ValueError,
        TypeError,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        UnsupportedAlgorithm,
    ) as exc:
        # Belt and braces: anything cryptography raises about this certificate means "untrusted".
        return ChainFailure(
            Reason.IAS_CHAIN_UNTRUSTED, f"IAS signing certificate is unreadable ({exc})"
        )


def verify_ias_chain(signing_cert_der: bytes, trust: TrustConfig) -> VerifiedChain:
    """Check that the IAS signing certificate is issued directly by a trust anchor.

    Time is not considered here (see `check_chain_time`). Results, positive and negative, are
    cached per certificate in `trust.chain_cache`.
    """
    key = bytes(signing_cert_der)
    result = trust.chain_cache.get(key)
    if result is None:
        result = _check_chain(key, trust.ias_anchors)
        trust.chain_cache.put(key, result)
    if isinstance(result, ChainFailure):
        raise AttestationError(result.reason, result.message)
    return result


def check_chain_time(chain: VerifiedChain, at: datetime, what: str) -> None:
    """Require the signing certificate and its anchor to be valid at `at` (`what` names it)."""
    if at > chain.not_after:
        raise AttestationError(
            Reason.IAS_CHAIN_EXPIRED,
            f"the IAS signing chain expired {chain.not_after.isoformat()} "
            f"(checked at {what} {at.isoformat()})",
        )
    if at < chain.not_before:
        raise AttestationError(
            Reason.IAS_CHAIN_NOT_YET_VALID,
            f"the IAS signing chain is valid only from {chain.not_before.isoformat()} "
            f"(checked at {what} {at.isoformat()})",
        )


def verify_report_signature(body: bytes, signature: bytes, chain: VerifiedChain) -> None:
    """RSASSA-PKCS1-v1_5 / SHA-256 over the exact body bytes with the IAS signing key."""
    try:
        chain.signing_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError, TypeError):
        raise AttestationError(
            Reason.REPORT_SIGNATURE_INVALID,
            "the report signature does not verify with the IAS signing certificate",
        ) from None


def _malformed(message: str) -> AttestationError:
    return AttestationError(Reason.REPORT_MALFORMED, message)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A duplicated key lets two JSON parsers see different values in one signed body.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _malformed(f"duplicate JSON key {key[:40]!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise _malformed(f"{name} is not JSON")


def parse_timestamp(text: str) -> datetime:
    """Parse an IAS timestamp (`YYYY-MM-DDThh:mm:ss[.fraction]`, UTC, no zone suffix).

    A trailing `Z` is tolerated; fractions beyond microseconds are truncated.
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise _malformed(f"timestamp {text[:40]!r} is not YYYY-MM-DDThh:mm:ss[.ffffff]")
    year, month, day, hour, minute, second, fraction = match.groups()
    micros = int((fraction or "0").ljust(6, "0")[:6])
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, UTC
        )
    except ValueError as exc:
        raise _malformed(f"timestamp {text!r} is not a valid date: {exc}") from None


def _optional_string(doc: dict[str, Any], key: str) -> str | None:
    if key not in doc:
        return None
    value = doc[key]
    if not isinstance(value, str) or len(value) > _MAX_STRING:
        raise _malformed(f"{key} must be a string of at most {_MAX_STRING} characters")
    return value


def _required_string(doc: dict[str, Any], key: str) -> str:
    value = _optional_string(doc, key)
    if not value:
        raise _malformed(f"{key} is missing or empty")
    return value


def parse_report(body: bytes, signing_cert_sha256: bytes = b"") -> IasReport:
    """Parse and check a report body. It does not verify the signature: callers do that first.

    Raises `AttestationError` (`report-malformed`, `quote-malformed`) for anything that is not
    a well-formed IAS report with a 432-byte EPID quote body.
    """
    if len(body) > MAX_REPORT_BYTES:
        raise _malformed(f"report body is {len(body)} bytes (limit {MAX_REPORT_BYTES})")
    try:
        text = bytes(body).decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise _malformed("report body is not UTF-8") from None
    except RecursionError:
        raise _malformed("report body nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() limits on huge numbers
        raise _malformed(f"report body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _malformed("report body is not a JSON object")

    version = doc.get("version")
    if "version" in doc and (type(version) is not int or version not in REPORT_VERSIONS):
        raise _malformed(f"unsupported report version {str(version)[:20]!r}")

    report_id = _required_string(doc, "id")
    timestamp = parse_timestamp(_required_string(doc, "timestamp"))
    status = _required_string(doc, "isvEnclaveQuoteStatus")
    quote_b64 = _required_string(doc, "isvEnclaveQuoteBody")

    advisory_ids: tuple[str, ...] = ()
    if "advisoryIDs" in doc:
        raw_ids = doc["advisoryIDs"]
        if not isinstance(raw_ids, list) or not all(
            isinstance(a, str) and 0 < len(a) <= 64 for a in raw_ids
        ):
            raise _malformed("advisoryIDs must be a list of short strings")
        advisory_ids = tuple(raw_ids)

    try:
        quote_raw = strict_b64decode(quote_b64)
    except ValueError as exc:
        raise AttestationError(
            Reason.QUOTE_MALFORMED, f"isvEnclaveQuoteBody is not base64: {exc}"
        ) from None
    if len(quote_raw) != QUOTE_BODY_SIZE:
        raise AttestationError(
            Reason.QUOTE_MALFORMED,
            f"isvEnclaveQuoteBody holds {len(quote_raw)} bytes, expected {QUOTE_BODY_SIZE}",
        )
    quote = parse_quote_body(quote_raw)

    return IasReport(
        body=bytes(body),
        report_id=report_id,
        timestamp=timestamp,
        version=version,
        quote_status=status,
        quote=quote,
        advisory_ids=advisory_ids,
        advisory_url=_optional_string(doc, "advisoryURL"),
        nonce=_optional_string(doc, "nonce"),
        epid_pseudonym=_optional_string(doc, "epidPseudonym"),
        platform_info_blob=_optional_string(doc, "platformInfoBlob"),
        signing_cert_sha256=signing_cert_sha256,
    )


def check_quote_status(report: IasReport) -> None:
    """Reject statuses that no policy may accept (revoked, invalid signature, unknown ...).

    Whether an acceptable status is accepted for a given enclave is the policy's decision.
    """
    if report.quote_status not in ACCEPTABLE_QUOTE_STATUSES:
        raise AttestationError(
            Reason.QUOTE_STATUS_REJECTED,
            f"quote status {report.quote_status[:60]!r} is never acceptable",
        )


def verify_report_static(
    body: bytes, signature: bytes, signing_cert_der: bytes, trust: TrustConfig
) -> tuple[IasReport, VerifiedChain]:
    """Steps 1-4 of the module docstring: everything that does not depend on the clock."""
    if len(body) > MAX_REPORT_BYTES:
        raise _malformed(f"report body is {len(body)} bytes (limit {MAX_REPORT_BYTES})")
    chain = verify_ias_chain(signing_cert_der, trust)
    verify_report_signature(body, signature, chain)
    report = parse_report(body, chain.signing_cert_sha256)
    check_quote_status(report)
    return report, chain


def check_report_time(
    report: IasReport, chain: VerifiedChain, trust: TrustConfig, now: datetime
) -> None:
    """Step 5: the signing chain at the configured time, then report freshness against `now`."""
    if trust.ias_chain_time == "report":
        check_chain_time(chain, report.timestamp, "report timestamp")
    else:
        check_chain_time(chain, now, "now")
    if report.timestamp > now + trust.clock_skew:
        raise AttestationError(
            Reason.REPORT_FROM_FUTURE,
            f"report timestamp {report.timestamp.isoformat()} is later than now "
            f"({now.isoformat()}) plus the clock skew tolerance",
        )
    if trust.max_report_age is not None and now - report.timestamp > trust.max_report_age:
        age = now - report.timestamp
        raise AttestationError(
            Reason.REPORT_TOO_OLD,
            f"report is {_age(age)} old (limit {_age(trust.max_report_age)})",
        )


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds >= 86400:
        return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
    return f"{seconds}s"


def verify_report(
    body: bytes, signature: bytes, signing_cert_der: bytes, trust: TrustConfig, now: datetime
) -> IasReport:
    """Verify a raw IAS report triple completely (signature, chain, content, time).

    `signature` is the decoded signature (not the base64 header value). Raises only
    `AttestationError`, whatever the bytes.
    """
    now = as_utc(now)
    report, chain = verify_report_static(body, signature, signing_cert_der, trust)
    check_report_time(report, chain, trust, now)
    return report
