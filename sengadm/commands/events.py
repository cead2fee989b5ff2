"""`sengadm events` (follow the daemon's event stream) and `sengadm denials`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sengadm import exitcodes
from sengadm.client import Client, Unreachable
from sengadm.rpccall import exit_code_for, run, table
from sengd.rpc.protocol import RpcError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = subparsers.add_parser(
        "events",
        help="follow events: sessions up/down, denials, admin changes, stats",
        description="Print the daemon's events as they happen, one per line, until interrupted "
        "or the daemon goes away.",
        epilog="examples:\n  sengadm events\n  sengadm events --json --no-stats | jq .",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--no-stats", action="store_true", help="omit the once-a-second stats")
    events.set_defaults(handler=follow)

    denials = subparsers.add_parser(
        "denials",
        help="recent refused tunnels with their reasons",
        description="The most recent denials the daemon remembers (newest last).",
    )
    denials.add_argument("--limit", type=int, default=50, help="how many (1-1000)")
    denials.add_argument("--json", action="store_true", help="print the raw JSON answer")
    denials.set_defaults(
        handler=lambda args: run(args, "denials.recent", {"limit": args.limit}, render_denials)
    )

    reload = subparsers.add_parser(
        "reload",
        help="reload the daemon's config and allowlist (like SIGHUP)",
        description="Re-read the configuration file's policy knobs and the allowlist; sessions "
        "the new policy no longer admits are closed and listed.",
    )
    reload.add_argument("--json", action="store_true", help="print the raw JSON answer")
    reload.set_defaults(handler=lambda args: run(args, "config.reload", None, render_reload))


def follow(args: argparse.Namespace) -> int:
    try:
        with Client(args.socket) as client:
            for event in client.events():
                if args.no_stats and event.get("event") == "stats":
                    continue
                print(json.dumps(event) if args.json else describe(event), flush=True)
    except Unreachable as exc:
        print(f"sengadm: daemon unreachable: {exc}", file=sys.stderr)
        return exitcodes.UNREACHABLE
    except RpcError as exc:
        print(f"sengadm: events: {exc.message}", file=sys.stderr)
        return exit_code_for(exc)
    return exitcodes.OK


def describe(event: dict[str, Any]) -> str:
    """One human line per event."""
    kind = event.get("event")
    if kind in ("session.up", "session.down"):
        extra = f" reason={event['reason']}" if "reason" in event else ""
        return f"{kind} {event['enclave_ip']} app={event['app']} host={event['host']}{extra}"
    if kind == "denial":
        return f"denial host={event['host']} reason={event['reason']}: {event['detail']}"
    if kind == "admin.change":
        return f"admin.change {event['method']} by {event['actor']}"
    if kind == "stats":
        return (
            f"stats sessions={event['sessions']} rx={event['rx_bytes_per_s']}B/s "
            f"tx={event['tx_bytes_per_s']}B/s"
        )
    return json.dumps(event)


def render_denials(denials: list[dict[str, Any]]) -> None:
    rows = [
        [
            d["at"][:19].replace("T", " "),
            f"{d['host']}:{d['port']}",
            str(d["tunnel"]),
            d["reason"],
            (d["mr_enclave"] or "-")[:16],
            d["detail"],
        ]
        for d in denials
    ]
    header = ["TIME (UTC)", "HOST", "TUNNEL", "REASON", "MRENCLAVE", "DETAIL"]
    print(table(rows, header) if rows else "no denials")


def render_reload(r: dict[str, Any]) -> None:
    print(f"reloaded {r['source']}")
    if r["restart_needed"]:
        print("needs a restart to take effect: " + ", ".join(r["restart_needed"]))
    for s in r["closed_sessions"]:
        print(f"closed {s['enclave_ip']} ({s['app']})")
