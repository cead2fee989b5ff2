"""`sengadm apply FILE.toml [--prune] [--dry-run]`: make the allowlist and subnets match a file.

The file format is documented in docs/apply.md. Applying is idempotent: a second run with the
same file changes nothing and says so.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from sengadm import exitcodes
from sengadm.backend import Backend, ManPageFormatter, print_diff, print_json, run_command

MAX_FILE = 4 * 1024 * 1024

DESCRIPTION = """\
Make the allowlist, the enclave subnets and the categories match FILE.toml (docs/apply.md
describes the format), for configuration management: subnets, categories and enclaves the
file lists are created or changed to match it, in one transaction; what is already as the file
says is left alone. The changes are printed as a diff (+ created, ~ changed, - removed); a
second run with the same file changes nothing and says so.

With --prune, what the file does not list goes: entries (the daemon closes their sessions at
once), categories no entry uses and subnets no host route leads to (a subnet where enclaves
still hold addresses is kept, with a note, until their sessions closed). Without --prune
nothing is removed.

Any problem in the file (all are listed) or with the stored state (a name taken, an identity
allowlisted under another name, a subnet whose CIDR differs) refuses the whole file: nothing
changes. Through the daemon (--socket) changes apply at once; with --db URL they edit the
database directly and a running daemon applies them at its next reload.
"""

EPILOG = """\
example file:
  [[subnet]]
  name = "backend"
  cidr = "10.77.0.0/24"
  gateway = "10.77.0.1"
  default = true

  [[enclave]]
  name = "nginx"
  mr_enclave = "6b5c1f0e...64 hex digits"
  host_subnets = ["0.0.0.0/0"]
  categories = ["web"]

  [[enclave]]
  name = "api"
  mr_signer = "83d719e7...64 hex digits"
  isv_prod_id = 2
  min_isv_svn = 3
  host_subnets = ["10.1.0.0/16", "10.2.0.0/16=backend"]

examples:
  sengadm apply /etc/seng/allowlist.toml --dry-run
  sengadm apply /etc/seng/allowlist.toml --prune
  sengadm --db /var/lib/seng/seng.db apply allowlist.toml

exit status: 0 applied (or nothing to change), 1 refused by the stored state, 2 problems in the
file or unreadable file, 3 daemon unreachable.
"""


class FileProblem(Exception):
    """The file cannot be read or is not TOML (exit status 2)."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `apply` command."""
    parser = subparsers.add_parser(
        "apply",
        help="make the allowlist and subnets match a TOML file",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=ManPageFormatter,
    )
    parser.add_argument("file", metavar="FILE.toml", help="the declarative file; - for stdin")
    parser.add_argument(
        "--prune",
        action="store_true",
        help="also remove entries, unused categories and unused subnets the file does not list",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would change and change nothing"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=cmd_apply)


def _no_dates(value: Any, where: str) -> None:
    # TOML dates and times have no place in the format; JSON could not carry them either.
    if isinstance(value, datetime | date | time):
        raise FileProblem(f"{where}: dates and times are not used in this file ({value})")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_dates(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_dates(item, f"{where}[{index + 1}]")


def read_document(name: str) -> dict[str, Any]:
    """The parsed TOML file `name` (`-`: standard input); raises `FileProblem`."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_FILE + 1)
        else:
            with Path(name).open("rb") as fh:
                data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise FileProblem(f"{name}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise FileProblem(f"{name}: larger than {MAX_FILE} bytes")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise FileProblem(f"{name}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise FileProblem(f"{name}: not valid TOML: {exc}") from None
    _no_dates(document, "")
    return document


def _summary(result: dict[str, Any], name: str) -> str:
    changes = result.get("changes", [])
    if not changes:
        return f"nothing to change: the store already matches {name}"
    counts = {
        verb: sum(1 for c in changes if c["action"] == action)
        for action, verb in (("create", "created"), ("update", "changed"), ("delete", "removed"))
    }
    unchanged = sum(result.get("unchanged", {}).values())
    made = ", ".join(f"{n} {verb}" for verb, n in counts.items() if n)
    if result.get("dry_run"):
        return f"dry run, nothing changed: would have {made} ({unchanged} unchanged)"
    return f"applied {name}: {made} ({unchanged} unchanged)"


def cmd_apply(args: argparse.Namespace) -> int:
    """`sengadm apply`."""
    try:
        document = read_document(args.file)
    except FileProblem as exc:
        print(f"sengadm apply: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    params = {"document": document, "prune": args.prune, "dry_run": args.dry_run}

    def body(backend: Backend) -> int:
        result = backend.call("apply", params)
        if args.json:
            print_json(result)
            return exitcodes.OK
        print_diff(result)
        for note in result.get("notes", []):
            print(f"note: {note}")
        print(_summary(result, args.file))
        return exitcodes.OK

    return run_command(args, body)
