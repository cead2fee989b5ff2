"""`sengadm attest`: check what an enclave presented, offline, with the gateway's verifier.

    sengadm attest inspect FILE [--at TIME] [--ias-root PEM] [--json]
    sengadm attest verify-report --report F --signature F --signing-cert F [--at TIME] ...

Exit status: 0 valid, 1 rejected (the reason code says why), 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import json
import string
import sys
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sengadm import exitcodes
from sengd.attestation import AttestationError, Evidence, TrustConfig, TrustConfigError
from sengd.attestation.b64 import strict_b64decode
from sengd.attestation.evidence import verify_certificate
from sengd.attestation.ias import IasReport, check_report_time, verify_report_static
from sengd.attestation.quote import Quote

DEFAULT_IAS_ROOT = Path("/etc/seng/ias_report_signing_ca.pem")
"""Used when `--ias-root` is not given (the daemon's config will name the file later)."""
MAX_INPUT_BYTES = 1024 * 1024


class UsageError(Exception):
    """Bad arguments or unreadable input: exit status 2."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `attest inspect` and `attest verify-report`."""
    group = subparsers.add_parser(
        "attest",
        help="verify RA-TLS certificates and IAS reports offline",
        description="Verify what an enclave presented, with the gateway's own verifier.",
    )
    commands = group.add_subparsers(dest="attest_command", metavar="ACTION")
    group.set_defaults(handler=lambda _args: _usage(group))

    inspect = commands.add_parser(
        "inspect",
        help="verify an RA-TLS client certificate (PEM or DER) and print its evidence",
        description="Verify a SENG RA-TLS client certificate and print the evidence and the "
        "verdict. A PEM file with several certificates is treated as the chain a client sent "
        "(and refused: clients send only their leaf).",
    )
    inspect.add_argument("file", metavar="FILE", help="certificate file (PEM or DER), - for stdin")
    _common(inspect)
    inspect.set_defaults(handler=run_inspect)

    report = commands.add_parser(
        "verify-report",
        help="verify a raw IAS report (body, signature, signing certificate)",
        description="Verify an IAS attestation verification report given as its three parts.",
    )
    report.add_argument("--report", required=True, type=Path, help="exact report body bytes (JSON)")
    report.add_argument(
        "--signature",
        required=True,
        type=Path,
        help="X-IASReport-Signature: base64 (as sent), hex, or the raw bytes",
    )
    report.add_argument(
        "--signing-cert",
        required=True,
        type=Path,
        help="IAS signing certificate: DER or PEM (first certificate; URL-encoded PEM too)",
    )
    _common(report)
    report.set_defaults(handler=run_verify_report)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--at",
        metavar="TIME",
        help="verify as of TIME (ISO 8601, e.g. 2026-01-31T12:00:00Z; no zone = UTC); default: now",
    )
    parser.add_argument(
        "--ias-root",
        metavar="PEM",
        help="IAS report signing CA certificate(s) to trust; 'builtin' = Intel's root shipped "
        f"with seng-gateway; default: {DEFAULT_IAS_ROOT} (required if that file is absent)",
    )
    parser.add_argument(
        "--ias-chain-time",
        choices=("now", "report"),
        default="now",
        help="check the IAS signing chain at the verification time (default) or at the "
        "report's own timestamp (for reports signed before Intel's signing certificate "
        "expired on 2026-11-20)",
    )
    parser.add_argument(
        "--max-report-age",
        metavar="SECONDS",
        type=float,
        help="reject reports older than this (default: no limit)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def _parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at: {text!r} is not an ISO 8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _trust(args: argparse.Namespace) -> TrustConfig:
    max_age = args.max_report_age
    if max_age is not None and not max_age > 0:
        raise UsageError("--max-report-age must be positive")
    age = None if max_age is None else timedelta(seconds=max_age)
    try:
        if args.ias_root == "builtin":
            return TrustConfig.builtin(ias_chain_time=args.ias_chain_time, max_report_age=age)
        if args.ias_root is not None:
            path = Path(args.ias_root)
        elif DEFAULT_IAS_ROOT.exists():
            path = DEFAULT_IAS_ROOT
        else:
            raise UsageError(
                f"no IAS trust anchor: {DEFAULT_IAS_ROOT} does not exist, so --ias-root is "
                "required (a PEM file, or 'builtin' for Intel's production root)"
            )
        return TrustConfig.load(path, ias_chain_time=args.ias_chain_time, max_report_age=age)
    except TrustConfigError as exc:
        raise UsageError(f"--ias-root: {exc}") from None


def _read(path: str | Path) -> bytes:
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{path}: larger than {MAX_INPUT_BYTES} bytes")
    return data


def _pem_certificates(data: bytes, source: str) -> list[bytes]:
    if data.lstrip().startswith(b"-----BEGIN%20"):
        data = urllib.parse.unquote_to_bytes(data.strip())
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise UsageError(f"{source}: unreadable PEM certificate ({exc})") from None
    return [c.public_bytes(Encoding.DER) for c in certs]


def _certificates(data: bytes, source: str) -> list[bytes]:
    """PEM (every certificate in it) or DER (judged by the verifier, not here)."""
    if b"-----BEGIN" in data or data.lstrip().startswith(b"-----BEGIN%20"):
        return _pem_certificates(data, source)
    return [data]


def _signature(data: bytes) -> bytes:
    text = data.strip()
    if text and len(text) % 2 == 0 and all(chr(c) in string.hexdigits for c in text):
        return binascii.unhexlify(text)
    try:
        return strict_b64decode(text)
    except ValueError:
        return data


def _hex(data: bytes) -> str:
    return data.hex()


def _quote_json(quote: Quote) -> dict[str, Any]:
    return {
        "version": quote.version,
        "sign_type": quote.sign_type,
        "epid_group_id": f"0x{quote.epid_group_id:08x}",
        "qe_svn": quote.qe_svn,
        "pce_svn": quote.pce_svn,
        "basename": _hex(quote.basename),
        "cpu_svn": _hex(quote.cpu_svn),
        "misc_select": quote.misc_select,
        "flags": f"0x{quote.flags:x}",
        "xfrm": f"0x{quote.xfrm:x}",
        "debug": quote.debug,
        "mr_enclave": _hex(quote.mr_enclave),
        "mr_signer": _hex(quote.mr_signer),
        "isv_prod_id": quote.isv_prod_id,
        "isv_svn": quote.isv_svn,
        "config_svn": quote.config_svn,
        "report_data": _hex(quote.report_data),
    }


def _report_json(report: IasReport) -> dict[str, Any]:
    return {
        "id": report.report_id,
        "timestamp": report.timestamp.isoformat(),
        "version": report.version,
        "quote_status": report.quote_status,
        "advisory_ids": list(report.advisory_ids),
        "advisory_url": report.advisory_url,
        "nonce": report.nonce,
        "body_sha256": hashlib.sha256(report.body).hexdigest(),
        "signing_cert_sha256": _hex(report.signing_cert_sha256),
        "quote": _quote_json(report.quote),
    }


def _verdict(error: AttestationError | None, trust: TrustConfig, now: datetime) -> dict[str, Any]:
    return {
        "verdict": "valid" if error is None else "rejected",
        "reason": None if error is None else error.reason.value,
        "message": None if error is None else error.message,
        "checked_at": now.isoformat(),
        "ias_chain_time": trust.ias_chain_time,
        "trust_anchors": [
            {
                "source": a.source,
                "sha256": _hex(a.sha256),
                "subject": a.certificate.subject.rfc4514_string(),
            }
            for a in trust.ias_anchors
        ],
    }


def _print_human(
    doc: dict[str, Any], details: dict[str, Any] | None, label: str, out: TextIO
) -> None:
    print(f"verdict: {doc['verdict'].upper()}", file=out)
    if doc["reason"] is not None:
        print(f"reason:  {doc['reason']}", file=out)
        print(f"message: {doc['message']}", file=out)
    print(f"checked at: {doc['checked_at']} (IAS chain at: {doc['ias_chain_time']})", file=out)
    for anchor in doc["trust_anchors"]:
        print(f"trust anchor: {anchor['subject']} sha256 {anchor['sha256']}", file=out)
    if details is None:
        return
    print(f"{label}:", file=out)
    _print_tree(details, "  ", out)


def _print_tree(doc: dict[str, Any], indent: str, out: TextIO) -> None:
    width = max(len(k) for k in doc)
    for key, value in doc.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:", file=out)
            _print_tree(value, indent + "  ", out)
            continue
        shown = (", ".join(map(str, value)) or "-") if isinstance(value, list) else value
        print(f"{indent}{key.ljust(width)}  {'-' if shown is None else shown}", file=out)


def _emit(
    args: argparse.Namespace,
    error: AttestationError | None,
    trust: TrustConfig,
    now: datetime,
    key: str,
    details: dict[str, Any] | None,
    time_only: bool,
) -> int:
    doc = _verdict(error, trust, now)
    doc[key] = details
    # A rejection by a time check still leaves everything else verified: say exactly that.
    doc["verified_except_time"] = error is not None and time_only
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        label = key
        if doc["verified_except_time"]:
            label += " (every check passed except the time checks above)"
        _print_human(doc, details if error is None or time_only else None, label, sys.stdout)
    return exitcodes.OK if error is None else exitcodes.REFUSED


def run_inspect(args: argparse.Namespace) -> int:
    """`sengadm attest inspect`."""
    try:
        now = _parse_time(args.at)
        trust = _trust(args)
        chain = _certificates(_read(args.file), str(args.file))
    except UsageError as exc:
        print(f"sengadm attest inspect: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    evidence: Evidence | None = None
    error: AttestationError | None = None
    time_only = False
    try:
        evidence = verify_certificate(chain, trust, now)
    except AttestationError as exc:
        error = exc
        # verify_certificate caches results that passed every check but the time checks.
        if len(chain) == 1:
            cached = trust.cert_cache.get(hashlib.sha256(chain[0]).digest())
            if cached is not None:
                evidence, time_only = cached.evidence, True
    details = None if evidence is None else evidence.to_json()
    return _emit(args, error, trust, now, "evidence", details, time_only)


def run_verify_report(args: argparse.Namespace) -> int:
    """`sengadm attest verify-report`."""
    try:
        now = _parse_time(args.at)
        trust = _trust(args)
        body = _read(args.report)
        signature = _signature(_read(args.signature))
        signing_cert = _certificates(_read(args.signing_cert), str(args.signing_cert))[0]
    except UsageError as exc:
        print(f"sengadm attest verify-report: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    report: IasReport | None = None
    error: AttestationError | None = None
    time_only = False
    try:
        report, chain = verify_report_static(body, signature, signing_cert, trust)
        time_only = True
        check_report_time(report, chain, trust, now)
    except AttestationError as exc:
        error = exc
    details = None if report is None else _report_json(report)
    return _emit(args, error, trust, now, "report", details, time_only)
