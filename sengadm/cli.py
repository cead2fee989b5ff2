"""`sengadm`: the administration tool of seng-gateway.

Only argument parsing and dispatch live here; each subcommand group is a module of
`sengadm.commands` that registers its parsers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from sengadm import exitcodes
from sengadm.client import DEFAULT_SOCKET
from sengd import __version__

# Subcommand groups, in the order `sengadm --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "status",
    "session",
    "events",
    "enclave",
    "subnet",
    "category",
    "apply",
    "audit",
    "db",
    "attest",
    "dashboard",
)

EPILOG = """\
exit status:
  0  success (for verification commands: the evidence is valid)
  1  refused or not found (the daemon or the verifier said no)
  2  usage error, unreadable input or local I/O error
  3  the daemon's control socket could not be reached
"""

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Return the complete argument parser with every subcommand group registered."""
    parser = argparse.ArgumentParser(
        prog="sengadm",
        description="Administer a seng-gateway: allowlist, subnets, sessions, attestation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sengadm {__version__}")
    parser.add_argument(
        "--socket",
        metavar="PATH",
        default=str(DEFAULT_SOCKET),
        help=f"sengd's control socket (default: {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="work offline on this database instead of through the daemon (enclave, subnet, "
        "category, audit and apply commands; for image builds and package scripts): an "
        "SQLAlchemy URL or the path of an SQLite file",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"sengadm.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `sengadm` with `argv` (default: the process arguments) and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        if args.command is None and sys.stdin.isatty() and sys.stdout.isatty():
            from sengadm.commands.dashboard import run as dashboard

            args.refresh = 2.0
            return dashboard(args)
        parser.print_help(sys.stderr)
        return exitcodes.USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
