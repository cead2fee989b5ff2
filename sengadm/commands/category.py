"""`sengadm category list`: the categories allowlist entries belong to."""

from __future__ import annotations

import argparse
import sys

from sengadm import exitcodes
from sengadm.backend import Backend, ManPageFormatter, print_json, run_command
from sengadm.rpccall import table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `category` command group."""
    group = subparsers.add_parser(
        "category",
        help="categories of allowlist entries",
        description="Categories group allowlist entries (for firewall sets and the original "
        "netfilter extension's classes). A category is created when an entry first names it "
        "(`sengadm enclave add ... --category C`); `sengadm apply --prune` removes unused "
        "ones the file does not list.",
        epilog="examples:\n  sengadm category list\n  sengadm category list --json",
        formatter_class=ManPageFormatter,
    )
    commands = group.add_subparsers(dest="category_command", metavar="ACTION")
    group.set_defaults(handler=lambda _args: _usage(group))
    lst = commands.add_parser(
        "list",
        help="list the categories and their entries",
        description="List every category with its description and entries.",
        epilog="example:\n  sengadm category list --json",
        formatter_class=ManPageFormatter,
    )
    lst.add_argument("--json", action="store_true", help="print the answer as JSON")
    lst.set_defaults(handler=cmd_list)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return exitcodes.USAGE


def _list(args: argparse.Namespace, backend: Backend) -> int:
    categories = backend.call("categories.list")
    if args.json:
        print_json(categories)
    elif not categories:
        print("no categories")
    else:
        rows = [
            [c["name"], ", ".join(c["entries"]) or "-", c["description"] or "-"] for c in categories
        ]
        print(table(rows, ["CATEGORY", "ENTRIES", "DESCRIPTION"]))
    return exitcodes.OK


def cmd_list(args: argparse.Namespace) -> int:
    """`sengadm category list`."""
    return run_command(args, lambda b: _list(args, b))
