"""`sengadm enclave`: the allowlist: which enclaves may connect, from where, into which subnet.

sengadm enclave add NAME (--mrenclave HEX | --mrsigner HEX --isv-prod-id N [--min-svn N]
                          | --from-cert FILE [--by-signer]) --host-subnet CIDR[=SUBNET] ...
sengadm enclave update NAME [options]
sengadm enclave list | show NAME | remove NAME | enable NAME | disable NAME
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from sengadm import exitcodes
from sengadm.backend import (
    Backend,
    ManPageFormatter,
    print_changes,
    print_json,
    route_text,
    run_command,
    show_value,
)
from sengadm.rpccall import table
from sengd.attestation import AttestationError, TrustConfig, TrustConfigError
from sengd.attestation.evidence import _verify_static
from sengd.attestation.ias import parse_report
from sengd.attestation.ratls import extract_payload, parse_certificate

DEFAULT_IAS_ROOT = Path("/etc/seng/ias_report_signing_ca.pem")
"""The IAS root `--from-cert` verifies against when present (else Intel's, built in)."""
MAX_CERT_FILE = 1024 * 1024

GLOBAL_NOTE = """\
NAME is the entry's name (unique; #ID addresses an entry by id, for legacy imports with
duplicate names). Host routes: --host-subnet CIDR admits enclaves whose untrusted host is in
CIDR, into the default enclave subnet (the one marked default, else the only one; in a database
without subnets, 192.168.28.0/24 with gateway .1 is created as the default); CIDR=SUBNET admits
them into enclave subnet SUBNET (a name or CIDR, see `sengadm subnet list`). 0.0.0.0/0 means
any host. Settings left out (debug, quote and TCB statuses) follow the daemon's [attestation]
defaults.

Changes go through the daemon (--socket) and apply at once: removing or disabling an entry
closes every session it admitted. With --db URL they edit the database directly (no daemon
needed); a running daemon applies them at its next reload.
"""

ADD_EPILOG = """\
examples:
  sengadm enclave add nginx --mrenclave 6b5c...e1 --host-subnet 0.0.0.0/0
  sengadm enclave add api --mrsigner 83d7...1a --isv-prod-id 2 --min-svn 3 \\
      --host-subnet 10.1.0.0/16=backend --host-subnet 10.2.0.0/16=backend --category web
  sengadm enclave add nginx --from-cert nginx-ratls.pem --host-subnet 0.0.0.0/0
  sengadm --db /var/lib/seng/seng.db enclave add demo --mrenclave 6b5c...e1 \\
      --host-subnet 127.0.0.0/8

--from-cert reads the identity from an enclave's RA-TLS certificate (PEM or DER) and, unless
--no-verify, checks what does not depend on the clock: the certificate's self-signature, the
IAS report signature and its chain to the trust anchor (--ias-root; default
/etc/seng/ias_report_signing_ca.pem if present, else Intel's root shipped with seng-gateway)
and the binding of the report to the certificate's key. So the measurements you allowlist are
ones a genuine enclave reported. Freshness and quote status are not checked here: the gateway
checks them at every connection. With --by-signer the entry matches MRSIGNER and ISV product
id instead of MRENCLAVE, with the certificate's ISV SVN as the minimum unless --min-svn.

exit status: 0 added, 1 refused (name or identity already allowlisted, unknown subnet),
2 usage error or unreadable certificate, 3 daemon unreachable.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `enclave` command group."""
    group = subparsers.add_parser(
        "enclave",
        help="allowlist entries: add, update, list, show, remove, enable, disable",
        description="Manage the allowlist: the enclaves allowed to connect, the hosts they may "
        "connect from and the enclave subnets they get addresses in.\n\n" + GLOBAL_NOTE,
        epilog="examples:\n"
        "  sengadm enclave list\n"
        "  sengadm enclave add nginx --mrenclave HEX --host-subnet 0.0.0.0/0\n"
        "  sengadm enclave show nginx --json\n"
        "  sengadm enclave disable nginx\n"
        "  sengadm enclave remove nginx\n\n"
        "`sengadm enclave ACTION --help` describes each action.",
        formatter_class=ManPageFormatter,
    )
    commands = group.add_subparsers(dest="enclave_command", metavar="ACTION")
    group.set_defaults(handler=lambda _args: _usage(group))
    _register_add(commands)
    _register_update(commands)
    _register_reads(commands)
    _register_changes(commands)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the daemon's answer as one JSON document"
    )


def _policy_options(parser: argparse.ArgumentParser, *, update: bool) -> None:
    replaces = " (replaces the entry's list)" if update else ""
    parser.add_argument(
        "--category",
        metavar="C",
        action="append",
        dest="categories",
        help=f"put the entry in category C (created if new); repeatable{replaces}",
    )
    parser.add_argument(
        "--allow-debug",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="admit (or with --no-allow-debug refuse) debug enclaves, whose memory the host can "
        "read; default: the daemon's attestation.allow_debug (off)",
    )
    parser.add_argument(
        "--quote-status",
        metavar="S",
        action="append",
        dest="quote_statuses",
        help="accept IAS quote status S (OK, GROUP_OUT_OF_DATE, CONFIGURATION_NEEDED, "
        "SW_HARDENING_NEEDED, CONFIGURATION_AND_SW_HARDENING_NEEDED); repeatable; replaces the "
        "daemon's default list for this entry",
    )
    parser.add_argument(
        "--tcb-status",
        metavar="S",
        action="append",
        dest="tcb_statuses",
        help="accept DCAP TCB status S (UpToDate, SWHardeningNeeded, ConfigurationNeeded, ...); "
        "repeatable; replaces the daemon's default list for this entry",
    )
    parser.add_argument(
        "--deny-advisory",
        metavar="ID",
        action="append",
        dest="denied_advisories",
        help="refuse enclaves whose report lists Intel advisory ID (e.g. INTEL-SA-00334), on "
        f"top of the daemon's list; repeatable{replaces}",
    )
    parser.add_argument("--comment", metavar="TEXT", help="free text shown with the entry")


def _register_add(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = commands.add_parser(
        "add",
        help="allowlist an enclave",
        description="Allowlist an enclave: by exact MRENCLAVE (one build), or by MRSIGNER and "
        "ISV product id with a minimum ISV SVN (every build of a product a signer releases, "
        "no downgrades below the minimum).\n\n" + GLOBAL_NOTE,
        epilog=ADD_EPILOG,
        formatter_class=ManPageFormatter,
    )
    add.add_argument("name", metavar="NAME", help="the entry's name (unique)")
    ident = add.add_argument_group("identity (--mrenclave, --mrsigner or --from-cert)")
    ident.add_argument("--mrenclave", metavar="HEX", help="MRENCLAVE, 64 hex digits")
    ident.add_argument(
        "--mrsigner",
        metavar="HEX",
        help="MRSIGNER, 64 hex digits: matches by signer (needs --isv-prod-id); beside "
        "--mrenclave it is only recorded",
    )
    ident.add_argument("--isv-prod-id", metavar="N", type=int, help="ISV product id, 0..65535")
    ident.add_argument(
        "--min-svn",
        metavar="N",
        type=int,
        help="lowest ISV SVN admitted, 0..65535 (default 0, or the certificate's with "
        "--from-cert --by-signer)",
    )
    _cert_options(ident)
    add.add_argument(
        "--host-subnet",
        metavar="CIDR[=SUBNET]",
        action="append",
        dest="host_routes",
        required=True,
        help="admit enclaves on hosts in CIDR into enclave subnet SUBNET (name or CIDR; "
        "default: the default subnet); repeatable, at least one",
    )
    _policy_options(add, update=False)
    add.add_argument(
        "--disabled", action="store_true", help="add the entry disabled (it admits nobody)"
    )
    _json_option(add)
    add.set_defaults(handler=cmd_add)


def _cert_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--from-cert",
        metavar="FILE",
        type=Path,
        help="take MRENCLAVE (and the informational MRSIGNER) from this RA-TLS certificate",
    )
    group.add_argument(
        "--by-signer",
        action="store_true",
        help="with --from-cert: match by the certificate's MRSIGNER and ISV product id",
    )
    group.add_argument(
        "--ias-root",
        metavar="PEM",
        help="with --from-cert: the IAS report signing CA to verify against ('builtin' = "
        f"Intel's root shipped with seng-gateway; default: {DEFAULT_IAS_ROOT} if present, "
        "else builtin)",
    )
    group.add_argument(
        "--no-verify",
        action="store_true",
        help="with --from-cert: read the measurements without verifying the certificate",
    )


def _register_update(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    update = commands.add_parser(
        "update",
        help="change an entry",
        description="Change the given settings of entry NAME; everything else stays. Changes "
        "apply at once: sessions the entry no longer admits are closed.\n\n" + GLOBAL_NOTE,
        epilog="examples:\n"
        "  sengadm enclave update api --min-svn 4\n"
        "  sengadm enclave update nginx --add-host-subnet 10.3.0.0/16=backend\n"
        "  sengadm enclave update nginx --remove-host-subnet 0.0.0.0/0\n"
        "  sengadm enclave update nginx --mrenclave HEX   (a new build replaces the old)\n"
        "  sengadm enclave update nginx --default-allow-debug --rename web-frontend\n\n"
        "exit status: 0 done (or nothing to change), 1 refused or not found, 2 usage error, "
        "3 daemon unreachable.",
        formatter_class=ManPageFormatter,
    )
    update.add_argument("name", metavar="NAME", help="the entry (name or #ID)")
    update.add_argument("--rename", metavar="NEW", help="give the entry a new name")
    update.add_argument("--mrenclave", metavar="HEX", help="new MRENCLAVE, 64 hex digits")
    update.add_argument("--mrsigner", metavar="HEX", help="new MRSIGNER, 64 hex digits")
    update.add_argument("--isv-prod-id", metavar="N", type=int, help="new ISV product id")
    update.add_argument("--min-svn", metavar="N", type=int, help="new lowest ISV SVN admitted")
    update.add_argument(
        "--match-signer",
        action="store_true",
        help="drop the MRENCLAVE: match by MRSIGNER and product id from now on",
    )
    update.add_argument(
        "--host-subnet",
        metavar="CIDR[=SUBNET]",
        action="append",
        dest="host_routes",
        help="replace all host routes with these; repeatable",
    )
    update.add_argument(
        "--add-host-subnet",
        metavar="CIDR[=SUBNET]",
        action="append",
        dest="add_host_routes",
        help="add a host route (or re-point the route of that host subnet); repeatable",
    )
    update.add_argument(
        "--remove-host-subnet",
        metavar="CIDR",
        action="append",
        dest="remove_host_routes",
        help="remove the route of host subnet CIDR; repeatable",
    )
    update.add_argument(
        "--add-category", metavar="C", action="append", help="add category C; repeatable"
    )
    update.add_argument(
        "--remove-category", metavar="C", action="append", help="remove category C; repeatable"
    )
    _policy_options(update, update=True)
    for key, what in (
        ("allow-debug", "debug enclaves"),
        ("quote-statuses", "accepted quote statuses"),
        ("tcb-statuses", "accepted TCB statuses"),
    ):
        update.add_argument(
            f"--default-{key}",
            action="store_true",
            help=f"follow the daemon's default for {what} again",
        )
    update.add_argument(
        "--enabled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="enable (or with --no-enabled disable) the entry",
    )
    _json_option(update)
    update.set_defaults(handler=cmd_update)


def _register_reads(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lst = commands.add_parser(
        "list",
        help="list the allowlist",
        description="List every allowlist entry: name, identity, host routes, categories, "
        "state and the number of enclaves holding an address through it.",
        epilog="examples:\n  sengadm enclave list\n  sengadm enclave list --json | jq '.[].name'",
        formatter_class=ManPageFormatter,
    )
    _json_option(lst)
    lst.set_defaults(handler=cmd_list)

    show = commands.add_parser(
        "show",
        help="show one entry in full",
        description="Show every setting of one allowlist entry. Exit 1 if there is none.",
        epilog="examples:\n  sengadm enclave show nginx\n  sengadm enclave show '#12' --json",
        formatter_class=ManPageFormatter,
    )
    show.add_argument("name", metavar="NAME", help="the entry (name or #ID)")
    _json_option(show)
    show.set_defaults(handler=cmd_show)


def _register_changes(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for action, method, summary, detail in (
        (
            "remove",
            "allowlist.remove",
            "remove an entry and close its sessions",
            "Delete the entry with its host routes and category links. Through the daemon, "
            "every session it admitted is closed at once and listed.",
        ),
        (
            "enable",
            "allowlist.enable",
            "enable an entry",
            "Let the entry admit enclaves again (from their next handshake).",
        ),
        (
            "disable",
            "allowlist.disable",
            "disable an entry and close its sessions",
            "Keep the entry but let it admit nobody. Through the daemon, every session it "
            "admitted is closed at once and listed.",
        ),
    ):
        parser = commands.add_parser(
            action,
            help=summary,
            description=detail + " Exit 1 if there is no such entry.",
            epilog=f"example:\n  sengadm enclave {action} nginx",
            formatter_class=ManPageFormatter,
        )
        parser.add_argument("name", metavar="NAME", help="the entry (name or #ID)")
        _json_option(parser)
        parser.set_defaults(handler=_simple_write(method))


# -- certificates --------------------------------------------------------------------------


class CertError(Exception):
    """An unreadable or unverifiable certificate (exit status 2)."""


@dataclass(frozen=True, slots=True)
class CertIdentity:
    """The enclave identity in an RA-TLS certificate."""

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    debug: bool
    verified: bool


def _certificate_der(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CERT_FILE + 1)
    except OSError as exc:
        raise CertError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CERT_FILE:
        raise CertError(f"{path}: larger than {MAX_CERT_FILE} bytes")
    if b"-----BEGIN" not in data:
        return data
    try:
        with warnings.catch_warnings():
            # SENG's attester writes serial number 0, which `cryptography` warns about.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertError(f"{path}: unreadable PEM certificate ({exc})") from None
    if len(certs) != 1:
        raise CertError(f"{path}: holds {len(certs)} certificates; give the enclave's one")
    return certs[0].public_bytes(Encoding.DER)


def _trust(ias_root: str | None) -> TrustConfig:
    try:
        if ias_root == "builtin" or (ias_root is None and not DEFAULT_IAS_ROOT.exists()):
            return TrustConfig.builtin()
        return TrustConfig.load(Path(ias_root) if ias_root else DEFAULT_IAS_ROOT)
    except TrustConfigError as exc:
        raise CertError(f"--ias-root: {exc}") from None


def read_cert_identity(path: Path, *, ias_root: str | None, verify: bool) -> CertIdentity:
    """The identity in the RA-TLS certificate at `path`, verified unless `verify` is false.

    Verification covers everything that does not depend on the clock (self-signature, IAS
    report signature and chain, key binding); the gateway checks freshness and quote status
    at every connection. Raises `CertError`.
    """
    der = _certificate_der(path)
    try:
        if verify:
            evidence = _verify_static(der, _trust(ias_root)).evidence
            return CertIdentity(
                evidence.mr_enclave,
                evidence.mr_signer,
                evidence.isv_prod_id,
                evidence.isv_svn,
                evidence.attributes.debug,
                verified=True,
            )
        payload = extract_payload(parse_certificate(der).cert)
        quote = parse_report(payload.report_body).quote
    except AttestationError as exc:
        raise CertError(f"{path}: {exc}") from None
    return CertIdentity(
        quote.mr_enclave,
        quote.mr_signer,
        quote.isv_prod_id,
        quote.isv_svn,
        quote.debug,
        verified=False,
    )


def _identity_params(args: argparse.Namespace) -> dict[str, Any]:
    if args.from_cert is None:
        if args.by_signer or args.no_verify or args.ias_root:
            raise CertError("--by-signer, --no-verify and --ias-root go with --from-cert")
        return {
            "mr_enclave": args.mrenclave,
            "mr_signer": args.mrsigner,
            "isv_prod_id": args.isv_prod_id,
            "min_isv_svn": args.min_svn,
        }
    if args.mrenclave or args.mrsigner or args.isv_prod_id is not None:
        raise CertError("--from-cert gives the identity: leave out --mrenclave/--mrsigner/...")
    cert = read_cert_identity(args.from_cert, ias_root=args.ias_root, verify=not args.no_verify)
    if not cert.verified:
        print(f"sengadm: warning: {args.from_cert} was not verified", file=sys.stderr)
    if cert.debug and not args.allow_debug:
        print(
            "sengadm: note: the certificate's enclave is a debug build; it is refused unless "
            "the entry (--allow-debug) or the daemon allows debug enclaves",
            file=sys.stderr,
        )
    if args.by_signer:
        return {
            "mr_signer": cert.mr_signer.hex(),
            "isv_prod_id": cert.isv_prod_id,
            "min_isv_svn": cert.isv_svn if args.min_svn is None else args.min_svn,
        }
    return {
        "mr_enclave": cert.mr_enclave.hex(),
        "mr_signer": cert.mr_signer.hex(),
        "isv_prod_id": cert.isv_prod_id,
        "min_isv_svn": args.min_svn,
    }


# -- handlers ------------------------------------------------------------------------------


def _policy_params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "categories": args.categories,
        "allow_debug": args.allow_debug,
        "quote_statuses": args.quote_statuses,
        "tcb_statuses": args.tcb_statuses,
        "denied_advisories": args.denied_advisories,
        "comment": args.comment,
    }


def _print_write(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print_json(result)
    else:
        print_changes(result)
    return exitcodes.OK


def cmd_add(args: argparse.Namespace) -> int:
    """`sengadm enclave add`."""
    try:
        identity = _identity_params(args)
    except CertError as exc:
        print(f"sengadm enclave add: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    params = {
        "name": args.name,
        **identity,
        "host_routes": args.host_routes,
        **_policy_params(args),
        "enabled": False if args.disabled else None,
    }
    params = {k: v for k, v in params.items() if v is not None}
    return run_command(args, lambda b: _print_write(args, b.call("allowlist.add", params)))


def _update_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": args.name,
        "new_name": args.rename,
        "mr_enclave": args.mrenclave,
        "mr_signer": args.mrsigner,
        "isv_prod_id": args.isv_prod_id,
        "min_isv_svn": args.min_svn,
        "host_routes": args.host_routes,
        "add_host_routes": args.add_host_routes,
        "remove_host_routes": args.remove_host_routes,
        "add_categories": args.add_category,
        "remove_categories": args.remove_category,
        "enabled": args.enabled,
        **_policy_params(args),
    }
    params = {k: v for k, v in params.items() if v is not None}
    # A null parameter resets a field (allowlist.update).
    for flag, key in (
        (args.match_signer, "mr_enclave"),
        (args.default_allow_debug, "allow_debug"),
        (args.default_quote_statuses, "quote_statuses"),
        (args.default_tcb_statuses, "tcb_statuses"),
    ):
        if flag:
            params[key] = None
    return params


def cmd_update(args: argparse.Namespace) -> int:
    """`sengadm enclave update`."""
    conflicts = [
        (args.match_signer and args.mrenclave, "--match-signer and --mrenclave"),
        (args.default_allow_debug and args.allow_debug is not None, "--default-allow-debug"),
        (args.default_quote_statuses and args.quote_statuses, "--default-quote-statuses"),
        (args.default_tcb_statuses and args.tcb_statuses, "--default-tcb-statuses"),
    ]
    for clash, what in conflicts:
        if clash:
            print(f"sengadm enclave update: {what} contradict each other", file=sys.stderr)
            return exitcodes.USAGE
    params = _update_params(args)
    return run_command(args, lambda b: _print_write(args, b.call("allowlist.update", params)))


def _simple_write(method: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        return run_command(args, lambda b: _print_write(args, b.call(method, {"name": args.name})))

    return handler


def _short(hex_value: str | None) -> str:
    return "-" if not hex_value else f"{hex_value[:8]}…{hex_value[-4:]}"


def _list(args: argparse.Namespace, backend: Backend) -> int:
    entries = backend.call("allowlist.list")
    if args.json:
        print_json(entries)
        return exitcodes.OK
    if not entries:
        print("the allowlist is empty (sengadm enclave add NAME ...)")
        return exitcodes.OK
    rows = []
    for e in entries:
        ident = (
            f"MRENCLAVE {_short(e['mr_enclave'])}"
            if e["match"] == "mr_enclave"
            else f"MRSIGNER {_short(e['mr_signer'])}/{e['isv_prod_id']} svn>={e['min_isv_svn']}"
        )
        routes = ", ".join(f"{r['host_subnet']}->{r['enclave_subnet']}" for r in e["host_routes"])
        rows.append(
            [
                e["name"],
                ident,
                routes or "(none)",
                ",".join(e["categories"]) or "-",
                "yes" if e["enabled"] else "NO",
                str(e["open_leases"]),
            ]
        )
    print(table(rows, ["NAME", "IDENTITY", "HOST ROUTES", "CATEGORIES", "ENABLED", "LEASES"]))
    return exitcodes.OK


def cmd_list(args: argparse.Namespace) -> int:
    """`sengadm enclave list`."""
    return run_command(args, lambda b: _list(args, b))


def print_entry(entry: dict[str, Any]) -> None:
    """One entry, one setting per line."""
    signer_note = " (informational)" if entry["match"] == "mr_enclave" else ""
    lines = [
        ("entry", f"{entry['name']} (#{entry['id']})"),
        ("state", "enabled" if entry["enabled"] else "DISABLED (admits nobody)"),
        ("matches by", "MRENCLAVE" if entry["match"] == "mr_enclave" else "MRSIGNER + product"),
        ("MRENCLAVE", entry["mr_enclave"] or "-"),
        ("MRSIGNER", (entry["mr_signer"] or "-") + (signer_note if entry["mr_signer"] else "")),
        ("ISV product id", show_value("isv_prod_id", entry["isv_prod_id"])),
        ("min ISV SVN", str(entry["min_isv_svn"])),
        ("categories", show_value("categories", entry["categories"])),
        ("allow debug", show_value("allow_debug", entry["allow_debug"])),
        ("quote statuses", show_value("quote_statuses", entry["quote_statuses"])),
        ("TCB statuses", show_value("tcb_statuses", entry["tcb_statuses"])),
        ("denied advisories", show_value("denied_advisories", entry["denied_advisories"])),
        ("comment", entry["comment"] or "-"),
        ("open leases", str(entry.get("open_leases", 0))),
        ("created", entry.get("created_at", "-")),
        ("updated", entry.get("updated_at", "-")),
    ]
    width = max(len(k) for k, _ in lines) + 2
    for key, value in lines[:3]:
        print(f"{key:<{width}}{value}")
    routes = entry["host_routes"] or [None]
    for index, route in enumerate(routes):
        label = "host routes" if index == 0 else ""
        print(f"{label:<{width}}{route_text(route) if route else '(none: admits nobody)'}")
    for key, value in lines[3:]:
        print(f"{key:<{width}}{value}")


def _show(args: argparse.Namespace, backend: Backend) -> int:
    entry = backend.call("allowlist.get", {"name": args.name})
    if args.json:
        print_json(entry)
    else:
        print_entry(entry)
    return exitcodes.OK


def cmd_show(args: argparse.Namespace) -> int:
    """`sengadm enclave show`."""
    return run_command(args, lambda b: _show(args, b))
