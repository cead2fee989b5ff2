"""`sengadm subnet`: the enclave subnets enclave addresses are leased from.

sengadm subnet add CIDR [--gateway IP] [--name N] [--description T] [--default]
sengadm subnet list | remove NAME|CIDR [--force] | set-default NAME|CIDR
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sengadm import exitcodes
from sengadm.backend import Backend, ManPageFormatter, print_changes, print_json, run_command
from sengadm.rpccall import table

DESCRIPTION = """\
Enclave subnets are the address pools of the enclaves: each connected enclave leases one
address of the subnet its allowlist entry's host route leads to, and the gateway's TUN
interface carries the subnet's gateway address. Prefixes /8 to /30; subnets never overlap.

One subnet is the default: host routes given without =SUBNET (`sengadm enclave add
--host-subnet CIDR`) lead there. It is the subnet marked default, else the only subnet. The
first subnet added is marked default; in a database without subnets, adding an entry creates
192.168.28.0/24 with gateway 192.168.28.1 as the default, as the original SENG servers had it.

Through the daemon (--socket) changes apply at once (the TUN addresses and address pools
follow); with --db URL they edit the database directly and a running daemon applies them at
its next reload.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `subnet` command group."""
    group = subparsers.add_parser(
        "subnet",
        help="enclave subnets: add, list, remove, set-default",
        description=DESCRIPTION,
        epilog="examples:\n"
        "  sengadm subnet list\n"
        "  sengadm subnet add 10.77.0.0/24 --gateway 10.77.0.1 --name backend\n"
        "  sengadm subnet set-default backend\n"
        "  sengadm subnet remove backend --force\n\n"
        "`sengadm subnet ACTION --help` describes each action.",
        formatter_class=ManPageFormatter,
    )
    commands = group.add_subparsers(dest="subnet_command", metavar="ACTION")
    group.set_defaults(handler=lambda _args: _usage(group))

    add = commands.add_parser(
        "add",
        help="add an enclave subnet",
        description="Add an enclave subnet. Refused (exit 1) if it overlaps a subnet or its "
        "name is taken; exit 2 for a prefix outside /8../30 or a gateway outside the subnet.",
        epilog="examples:\n"
        "  sengadm subnet add 10.77.0.0/24 --gateway 10.77.0.1\n"
        "  sengadm subnet add 172.16.28.0/26 --name lab --description 'lab enclaves' --default",
        formatter_class=ManPageFormatter,
    )
    add.add_argument("cidr", metavar="CIDR", help="the subnet, e.g. 10.77.0.0/24")
    add.add_argument(
        "--gateway",
        metavar="IP",
        help="the gateway's own address in the subnet (default: the first address)",
    )
    add.add_argument("--name", metavar="N", help="a name for it (default: the CIDR)")
    add.add_argument("--description", metavar="TEXT", default=None, help="free text")
    add.add_argument(
        "--default",
        action="store_true",
        help="mark it the default subnet (instead of the one marked so far)",
    )
    _json_option(add)
    add.set_defaults(handler=cmd_add)

    lst = commands.add_parser(
        "list",
        help="list the enclave subnets",
        description="List the enclave subnets with their gateway, whether they are the "
        "default, the entries whose host routes lead there, open leases and size.",
        epilog="examples:\n  sengadm subnet list\n  sengadm subnet list --json",
        formatter_class=ManPageFormatter,
    )
    _json_option(lst)
    lst.set_defaults(handler=cmd_list)

    remove = commands.add_parser(
        "remove",
        help="remove an enclave subnet",
        description="Remove an enclave subnet. A subnet that host routes lead to or where "
        "enclaves hold addresses is refused (exit 1) unless --force: then the daemon closes "
        "its sessions, the host routes into it are deleted (the entries that lost routes are "
        "listed) and its lease history goes with it.",
        epilog="examples:\n  sengadm subnet remove lab\n  sengadm subnet remove 10.77.0.0/24 "
        "--force",
        formatter_class=ManPageFormatter,
    )
    remove.add_argument("subnet", metavar="NAME|CIDR", help="the subnet, by name or CIDR")
    remove.add_argument(
        "--force", action="store_true", help="remove it even while in use (see above)"
    )
    _json_option(remove)
    remove.set_defaults(handler=cmd_remove)

    default = commands.add_parser(
        "set-default",
        help="mark the default enclave subnet",
        description="Mark the subnet host routes without =SUBNET lead to. Existing routes "
        "keep their subnet.",
        epilog="example:\n  sengadm subnet set-default backend",
        formatter_class=ManPageFormatter,
    )
    default.add_argument("subnet", metavar="NAME|CIDR", help="the subnet, by name or CIDR")
    _json_option(default)
    default.set_defaults(handler=cmd_set_default)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def _write(args: argparse.Namespace, method: str, params: dict[str, Any]) -> int:
    def body(backend: Backend) -> int:
        result = backend.call(method, params)
        if args.json:
            print_json(result)
            return exitcodes.OK
        print_changes(result)
        for lost in result.get("entries_lost_routes", []):
            print(f"entry {lost['name']} lost host routes {', '.join(lost['host_subnets'])}")
        for name in result.get("entries_without_routes", []):
            print(f"warning: entry {name} has no host route left: it admits nobody")
        return exitcodes.OK

    return run_command(args, body)


def cmd_add(args: argparse.Namespace) -> int:
    """`sengadm subnet add`."""
    params = {
        "cidr": args.cidr,
        "gateway": args.gateway,
        "name": args.name,
        "description": args.description,
        "default": True if args.default else None,
    }
    return _write(args, "subnets.add", {k: v for k, v in params.items() if v is not None})


def cmd_remove(args: argparse.Namespace) -> int:
    """`sengadm subnet remove`."""
    return _write(args, "subnets.remove", {"name_or_cidr": args.subnet, "force": args.force})


def cmd_set_default(args: argparse.Namespace) -> int:
    """`sengadm subnet set-default`."""
    return _write(args, "subnets.set_default", {"name_or_cidr": args.subnet})


def _list(args: argparse.Namespace, backend: Backend) -> int:
    subnets = backend.call("subnets.list")
    if args.json:
        print_json(subnets)
        return exitcodes.OK
    if not subnets:
        print("no enclave subnets (sengadm subnet add CIDR)")
        return exitcodes.OK
    rows = [
        [
            s["name"],
            s["network"],
            s["gateway"],
            "yes" if s["default"] else "",
            ", ".join(s["entries"]) or "-",
            f"{s['open_leases']}/{s['addresses']}",
        ]
        for s in subnets
    ]
    print(table(rows, ["NAME", "NETWORK", "GATEWAY", "DEFAULT", "ENTRIES", "LEASED"]))
    return exitcodes.OK


def cmd_list(args: argparse.Namespace) -> int:
    """`sengadm subnet list`."""
    return run_command(args, lambda b: _list(args, b))
