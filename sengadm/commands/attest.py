"""`sengadm attest`: check what an enclave presented, offline, with the gateway's verifier.

    sengadm attest inspect FILE [--at TIME] [--ias-root PEM] [--collateral DIR] [--json]
    sengadm attest inspect --quote F --collateral DIR [--at TIME] [--sgx-root PEM] [--json]
    sengadm attest verify-report --report F --signature F --signing-cert F [--at TIME] ...

FILE is an RA-TLS client certificate: SENG's EPID form, or DCAP in the Gramine or sgx-ra-tls
form. `--quote` takes a raw DCAP quote v3 (binary, or hex / base64 text) and its collateral
directory. Exit status: 0 valid, 1 rejected (the reason code says why), 2 usage or I/O error.
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
from sengd.attestation.collateral import (
    EMPTY,
    Collateral,
    CollateralStore,
    collateral_dirs,
    read_collateral_dir,
    verify_raw,
)
from sengd.attestation.dcap import verify_quote
from sengd.attestation.dcap_quote import DcapQuote, parse_dcap_quote
from sengd.attestation.dcap_ratls import extract_dcap_payload, has_dcap_evidence
from sengd.attestation.evidence import StaticResult, dcap_evidence, verify_certificate
from sengd.attestation.ias import IasReport, check_report_time, verify_report_static
from sengd.attestation.quote import Quote
from sengd.attestation.trust import SgxRootAnchor, load_sgx_roots

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
        help="verify an RA-TLS client certificate (EPID or DCAP) or a raw DCAP quote",
        description="Verify an RA-TLS client certificate (SENG EPID, or DCAP in the Gramine or "
        "sgx-ra-tls form) or a raw DCAP quote with its collateral, and print the evidence "
        "(measurements, TCB status, advisory ids) and the verdict. A PEM file with several "
        "certificates is treated as the chain a client sent (and refused: clients send only "
        "their leaf).",
    )
    inspect.add_argument(
        "file", metavar="FILE", nargs="?", help="certificate file (PEM or DER), - for stdin"
    )
    inspect.add_argument(
        "--quote",
        metavar="F",
        help="a raw DCAP quote v3 (binary, hex or base64) instead of a certificate",
    )
    inspect.add_argument(
        "--collateral",
        metavar="DIR",
        help="DCAP collateral directory (PCS responses as files: tcb_info.signed.json, "
        "qe_identity.signed.json, CRLs and issuer chains; subdirectories too)",
    )
    inspect.add_argument(
        "--sgx-root",
        metavar="PEM",
        help="Intel SGX Root CA certificate(s) to pin for DCAP (by key); default: the one "
        "shipped with seng-gateway",
    )
    inspect.add_argument(
        "--allow-missing-crls",
        action="store_true",
        help="DCAP: accept when no Root CA / PCK CRL is available (legacy evidence only)",
    )
    inspect.add_argument(
        "--allow-missing-qe-identity",
        action="store_true",
        help="DCAP: accept when no QE identity is available (2019-era evidence only)",
    )
    _common(inspect)
    inspect.set_defaults(handler=run_inspect, parser=inspect)

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


def _trust(
    args: argparse.Namespace,
    *,
    need_ias: bool = True,
    sgx_roots: tuple[SgxRootAnchor, ...] = (),
    collateral: CollateralStore | None = None,
) -> TrustConfig:
    max_age = args.max_report_age
    if max_age is not None and not max_age > 0:
        raise UsageError("--max-report-age must be positive")
    age = None if max_age is None else timedelta(seconds=max_age)
    dcap = {
        "sgx_roots": sgx_roots,
        "collateral": collateral,
        "dcap_require_crls": not getattr(args, "allow_missing_crls", False),
        "dcap_require_qe_identity": not getattr(args, "allow_missing_qe_identity", False),
    }
    try:
        if args.ias_root == "builtin" or (
            args.ias_root is None and not need_ias and not DEFAULT_IAS_ROOT.exists()
        ):
            return TrustConfig.builtin(
                ias_chain_time=args.ias_chain_time,
                max_report_age=age,
                **dcap,  # type: ignore[arg-type]
            )
        if args.ias_root is not None:
            path = Path(args.ias_root)
        elif DEFAULT_IAS_ROOT.exists():
            path = DEFAULT_IAS_ROOT
        else:
            raise UsageError(
                f"no IAS trust anchor: {DEFAULT_IAS_ROOT} does not exist, so --ias-root is "
                "required (a PEM file, or 'builtin' for Intel's production root)"
            )
        return TrustConfig.load(
            path,
            ias_chain_time=args.ias_chain_time,
            max_report_age=age,
            **dcap,  # type: ignore[arg-type]
        )
    except TrustConfigError as exc:
        raise UsageError(f"--ias-root: {exc}") from None


def _sgx_roots(args: argparse.Namespace) -> tuple[SgxRootAnchor, ...]:
    value = getattr(args, "sgx_root", None)
    try:
        return load_sgx_roots(None if value in (None, "builtin") else Path(value))
    except TrustConfigError as exc:
        raise UsageError(f"--sgx-root: {exc}") from None


def _collateral(args: argparse.Namespace, roots: tuple[SgxRootAnchor, ...]) -> Collateral:
    """The collateral directory's items, verified; a bad item is a rejection (AttestationError)."""
    if args.collateral is None:
        return EMPTY
    out = EMPTY
    try:
        folders = collateral_dirs(args.collateral)
        raws = [read_collateral_dir(folder) for folder in folders]
    except OSError as exc:
        raise UsageError(f"--collateral: {exc}") from None
    for raw in raws:
        if not raw.is_empty():
            out = out + verify_raw(raw, roots)
    return out


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
    """PEM (every certificate in it) or DER (judged by the verifier, not here).

    A DER certificate can contain PEM text (sgx-ra-tls certificates carry their PCK certificate
    as PEM), so only a file that starts with a PEM header is read as PEM.
    """
    if data.lstrip().startswith(b"-----BEGIN"):
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


def _verdict(
    error: AttestationError | None,
    trust: TrustConfig,
    now: datetime,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
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
    if trust.sgx_roots:
        doc["sgx_roots"] = [
            {
                "source": r.source,
                "key_sha256": _hex(r.key_sha256),
                "subject": r.certificate.subject.rfc4514_string(),
            }
            for r in trust.sgx_roots
        ]
    return doc


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
    for root in doc.get("sgx_roots", ()):
        print(f"sgx root: {root['subject']} key sha256 {root['key_sha256']}", file=out)
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
    extra: dict[str, Any] | None = None,
) -> int:
    doc = _verdict(error, trust, now)
    doc[key] = details
    # A rejection by a time check still leaves everything else verified: say exactly that.
    doc["verified_except_time"] = error is not None and time_only
    doc.update(extra or {})
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        label = key
        if doc["verified_except_time"]:
            label += " (every check passed except the time checks above)"
        _print_human(doc, details if error is None or time_only else None, label, sys.stdout)
        unverified = (extra or {}).get("quote")
        if error is not None and unverified is not None:
            print("quote (as presented, NOT verified):", file=sys.stdout)
            _print_tree(unverified, "  ", sys.stdout)
    return exitcodes.OK if error is None else exitcodes.REFUSED


def _dcap_quote_json(quote: DcapQuote) -> dict[str, Any]:
    report = quote.report
    return {
        "version": quote.version,
        "cert_data_type": quote.cert_data_type,
        "qe_svn": quote.qe_svn,
        "pce_svn": quote.pce_svn,
        "mr_enclave": _hex(report.mr_enclave),
        "mr_signer": _hex(report.mr_signer),
        "isv_prod_id": report.isv_prod_id,
        "isv_svn": report.isv_svn,
        "flags": f"0x{report.flags:x}",
        "debug": report.debug,
        "report_data": _hex(report.report_data),
        "qe_mr_signer": _hex(quote.qe_report.mr_signer),
        "qe_isv_svn": quote.qe_report.isv_svn,
        "sha256": _hex(quote.sha256),
    }


def _presented_quote(data: bytes) -> dict[str, Any] | None:
    try:
        return _dcap_quote_json(parse_dcap_quote(data))
    except AttestationError:
        return None


def _quote_bytes(data: bytes) -> bytes:
    """A quote file: binary, or hex / base64 text of it."""
    text = data.strip()
    if text and len(text) % 2 == 0 and all(chr(c) in string.hexdigits for c in text):
        return binascii.unhexlify(text)
    if text[:4] == b"AwAC":  # base64 of a version-3 ECDSA quote's first bytes
        try:
            return strict_b64decode(text)
        except ValueError:
            pass
    return data


def _is_dcap_cert(chain: list[bytes]) -> bool:
    if len(chain) != 1:
        return False
    try:
        return has_dcap_evidence(x509.load_der_x509_certificate(chain[0]))
    except (ValueError, x509.InvalidVersion):
        return False


def _cert_quote(chain: list[bytes]) -> dict[str, Any] | None:
    try:
        payload = extract_dcap_payload(x509.load_der_x509_certificate(chain[0]))
    except (ValueError, x509.InvalidVersion, AttestationError):
        return None
    return _presented_quote(payload.quote)


def _inspect_certificate(args: argparse.Namespace, now: datetime) -> int:
    chain = _certificates(_read(args.file), str(args.file))
    dcap = _is_dcap_cert(chain)
    roots = _sgx_roots(args)
    store = CollateralStore(roots) if args.collateral is not None else None
    trust = _trust(args, need_ias=not dcap, sgx_roots=roots, collateral=store)
    evidence: Evidence | None = None
    error: AttestationError | None = None
    time_only = False
    try:
        if store is not None:
            store.add(_collateral(args, roots))
        evidence = verify_certificate(chain, trust, now)
    except AttestationError as exc:
        error = exc
        # verify_certificate caches results that passed every check but the time checks.
        if len(chain) == 1:
            cached = trust.cert_cache.get(hashlib.sha256(chain[0]).digest())
            if isinstance(cached, StaticResult):
                evidence, time_only = cached.evidence, True
    details = None if evidence is None else evidence.to_json()
    extra = {"quote": _cert_quote(chain)} if dcap else None
    return _emit(args, error, trust, now, "evidence", details, time_only, extra)


def _inspect_quote(args: argparse.Namespace, now: datetime) -> int:
    if args.collateral is None:
        raise UsageError("--quote needs --collateral DIR")
    data = _quote_bytes(_read(args.quote))
    roots = _sgx_roots(args)
    trust = _trust(args, need_ias=False, sgx_roots=roots)
    error: AttestationError | None = None
    details = None
    try:
        verdict = verify_quote(data, _collateral(args, roots), trust, now)
        details = dcap_evidence(verdict, "quote", sources=(str(args.collateral),)).to_json()
    except AttestationError as exc:
        error = exc
    return _emit(
        args, error, trust, now, "evidence", details, False, {"quote": _presented_quote(data)}
    )


def run_inspect(args: argparse.Namespace) -> int:
    """`sengadm attest inspect`."""
    if (args.file is None) == (args.quote is None):
        args.parser.error("give exactly one of FILE or --quote F")
    try:
        now = _parse_time(args.at)
        if args.quote is not None:
            return _inspect_quote(args, now)
        return _inspect_certificate(args, now)
    except UsageError as exc:
        print(f"sengadm attest inspect: {exc}", file=sys.stderr)
        return exitcodes.USAGE


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
