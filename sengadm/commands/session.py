"""`sengadm session list|show|kill`: who is connected, and cutting a session off."""

from __future__ import annotations

import argparse
from typing import Any

from sengadm import exitcodes
from sengadm.rpccall import human_bytes, run, table


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "session",
        help="list, show or kill enclave sessions",
        description="Enclave sessions: one per connected enclave (both of its DTLS tunnels).",
        epilog="examples:\n  sengadm session list\n  sengadm session show 192.168.28.2\n"
        "  sengadm session kill 192.168.28.2 --reason 'compromised host'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="session_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: _usage(parser))

    lst = commands.add_parser("list", help="list live sessions")
    lst.add_argument("--app", help="only sessions of this allowlist entry")
    lst.add_argument("--json", action="store_true", help="print the raw JSON answer")
    lst.set_defaults(
        handler=lambda args: run(args, "sessions.list", {"app": args.app}, render_list)
    )

    show = commands.add_parser("show", help="show one session with its full evidence")
    show.add_argument("enclave_ip", metavar="ENCLAVE_IP")
    show.add_argument("--json", action="store_true", help="print the raw JSON answer")
    show.set_defaults(
        handler=lambda args: run(args, "sessions.get", {"enclave_ip": args.enclave_ip}, render_one)
    )

    kill = commands.add_parser(
        "kill",
        help="close a session now (close_notify on both tunnels, lease ended)",
        description="Close the session holding ENCLAVE_IP. The reason reaches the daemon's log "
        "and the audit trail. The enclave cannot reconnect by itself.",
    )
    kill.add_argument("enclave_ip", metavar="ENCLAVE_IP")
    kill.add_argument("--reason", default="killed by an administrator", help="why (logged)")
    kill.add_argument("--json", action="store_true", help="print the raw JSON answer")
    kill.set_defaults(
        handler=lambda args: run(
            args,
            "sessions.kill",
            {"enclave_ip": args.enclave_ip, "reason": args.reason},
            lambda r: print(f"killed {r['killed']} ({r['app']}): {r['reason']}"),
        )
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return exitcodes.USAGE


def render_list(sessions: list[dict[str, Any]]) -> None:
    rows = [
        [
            s["enclave_ip"],
            s["app"],
            f"{s['host']}:{s['host_port']}",
            s["state"],
            s["since"][:19].replace("T", " "),
            human_bytes(s["rx_bytes"]),
            human_bytes(s["tx_bytes"]),
            f"{human_bytes(s['rx_bytes_per_s'])}/s",
            f"{human_bytes(s['tx_bytes_per_s'])}/s",
        ]
        for s in sessions
    ]
    header = ["ENCLAVE IP", "APP", "HOST", "STATE", "SINCE (UTC)", "RX", "TX", "RX RATE", "TX RATE"]
    print(table(rows, header) if rows else "no sessions")


def render_one(s: dict[str, Any]) -> None:
    for key in (
        "enclave_ip",
        "subnet",
        "app",
        "categories",
        "state",
        "host",
        "host_port",
        "since",
        "scheme",
        "mr_enclave",
        "mr_signer",
        "isv_prod_id",
        "isv_svn",
        "debug",
        "quote_status",
        "tcb_status",
        "advisory_ids",
        "report_id",
        "report_timestamp",
        "report_age_s",
        "key_type",
        "spki_sha256",
        "rx_bytes",
        "rx_packets",
        "tx_bytes",
        "tx_packets",
        "drops",
    ):
        print(f"{key:<17} {s.get(key)}")
