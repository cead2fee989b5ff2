"""`sengadm audit`: who changed what, and when."""

from __future__ import annotations

import argparse
from typing import Any

from sengadm import exitcodes
from sengadm.backend import Backend, ManPageFormatter, field_lines, print_json, run_command

DESCRIPTION = """\
Show the audit log: every change to the allowlist, the subnets and the categories, every
session killed by an administrator and every import, with the time, the Unix uid and user name
of whoever made it (the peer credentials of the control socket, or the user running sengadm
--db) and, for changes, which fields changed. --json prints the full before/after snapshots.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `audit` command."""
    parser = subparsers.add_parser(
        "audit",
        help="show the audit log",
        description=DESCRIPTION,
        epilog="examples:\n"
        "  sengadm audit\n"
        "  sengadm audit --limit 200 --since 2026-11-01T00:00:00Z\n"
        "  sengadm audit --json | jq '.[] | select(.action == \"delete\")'",
        formatter_class=ManPageFormatter,
    )
    parser.add_argument(
        "--limit",
        metavar="N",
        type=int,
        default=50,
        help="show the newest N events, 1..1000 (default 50)",
    )
    parser.add_argument(
        "--since",
        metavar="TIME",
        help="only events at or after TIME (ISO 8601; without a zone: UTC)",
    )
    parser.add_argument("--json", action="store_true", help="print the events as JSON")
    parser.set_defaults(handler=cmd_audit)


def _summary(event: dict[str, Any]) -> str:
    before, after = event.get("before") or {}, event.get("after") or {}
    if event["action"] in ("create", "delete"):
        return ""
    if event["action"] not in ("update", "enable", "disable"):
        return ", ".join(f"{k}={v}" for k, v in after.items())
    return "; ".join(
        line.strip()
        for k in dict.fromkeys([*before, *after])
        if before.get(k) != after.get(k)
        for line in field_lines(k, before.get(k), after.get(k))
    )


def _show(args: argparse.Namespace, backend: Backend) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.since:
        params["since"] = args.since
    events = backend.call("audit.list", params)
    if args.json:
        print_json(events)
        return exitcodes.OK
    if not events:
        print("no audit events")
    for event in events:
        snapshot = event.get("after") or event.get("before") or {}
        label = snapshot.get("name") if isinstance(snapshot, dict) else None
        target = f"{event['object_type']} {event['object_id'] or ''}".strip()
        if label:
            target += f" ({label})"
        uid = "" if event["actor_uid"] is None else f" uid {event['actor_uid']}"
        print(f"{event['at']}  {event['actor_name']}{uid}  {event['action']} {target}")
        detail = _summary(event)
        if detail:
            print(f"    {detail}")
    return exitcodes.OK


def cmd_audit(args: argparse.Namespace) -> int:
    """`sengadm audit`."""
    return run_command(args, lambda b: _show(args, b))
