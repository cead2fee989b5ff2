"""`sengadm dashboard` (and `sengadm` alone on a terminal): the live terminal dashboard."""

from __future__ import annotations

import argparse
import sys

from sengadm import exitcodes


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dashboard = subparsers.add_parser(
        "dashboard",
        help="the live terminal dashboard (also: sengadm with no command on a terminal)",
        description="Watch and steer the gateway: live sessions with their evidence, denials "
        "with their reasons, allowlist and subnet management. Talks to sengd through its "
        "control socket only; reconnects by itself when the daemon restarts. Press ? inside "
        "for the keys.",
    )
    dashboard.add_argument(
        "--refresh",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often session counters and rates are fetched (0.5-60, default 2)",
    )
    dashboard.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Open the dashboard until the operator quits; exit 2 when it cannot run here."""
    if getattr(args, "db", None):
        print(
            "sengadm: the dashboard shows a running daemon; --db is not supported", file=sys.stderr
        )
        return exitcodes.USAGE
    refresh = getattr(args, "refresh", 2.0)
    if not 0.5 <= refresh <= 60:
        print("sengadm: --refresh must be 0.5 to 60 seconds", file=sys.stderr)
        return exitcodes.USAGE
    try:
        from sengadm.tui.app import SengDashboard
    except ImportError as exc:
        print(f"sengadm: the dashboard needs Textual ({exc})", file=sys.stderr)
        return exitcodes.USAGE
    app = SengDashboard(args.socket, refresh=refresh)
    app.run()
    return exitcodes.OK
