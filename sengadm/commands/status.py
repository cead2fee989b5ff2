"""`sengadm status`: the gateway's state and counters."""

from __future__ import annotations

import argparse
from typing import Any

from sengadm.rpccall import human_bytes, run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the gateway's state and counters",
        description="Show version, uptime, listen address, sessions, handshake successes and "
        "failures by reason, drops by reason, and traffic since start.",
        epilog="example:\n  sengadm status\n  sengadm status --json | jq .drops",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    parser.set_defaults(handler=lambda args: run(args, "status", None, render))


def render(s: dict[str, Any]) -> None:
    print(f"gateway      {s['gateway']}  (sengd {s['version']}, up {s['uptime_s']:.0f} s)")
    print(f"listening    {s['listen']} and {s['listen_tunnel2']}  interface {s['interface']}")
    print(f"mode         {s['mode']}  ({s['allowlist_entries']} allowlist entries)")
    print(
        f"sessions     {s['sessions']} ({s['active_sessions']} active, "
        f"{s['pending_handshakes']} handshakes pending)"
    )
    print(
        f"traffic      from enclaves {human_bytes(s['rx_bytes'])} / {s['rx_packets']} packets, "
        f"to enclaves {human_bytes(s['tx_bytes'])} / {s['tx_packets']} packets"
    )
    workers = s.get("handshake_workers") or []
    if workers:
        alive = sum(1 for w in workers if w.get("alive"))
        restarts = sum(int(w.get("restarts", 0)) for w in workers)
        print(f"workers      {alive} of {len(workers)} handshake workers up, {restarts} restarts")
    else:
        print("workers      handshakes run in sengd itself")
    handshakes = s["handshakes"]
    if handshakes:
        print("handshakes   " + ", ".join(f"{k} {v}" for k, v in sorted(handshakes.items())))
    drops = dict(s["drops"])
    for listener in s["listener_drops"]:
        for reason, count in listener.items():
            drops[reason] = drops.get(reason, 0) + count
    if drops:
        print("drops        " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
