"""Calling the daemon from a sengadm command: one call, errors mapped to exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from sengadm import exitcodes
from sengadm.client import Client, Unreachable
from sengd.rpc.protocol import CONFLICT, FORBIDDEN, INVALID_PARAMS, NOT_FOUND, RpcError

_EXIT_BY_CODE = {
    NOT_FOUND: exitcodes.REFUSED,
    CONFLICT: exitcodes.REFUSED,
    FORBIDDEN: exitcodes.REFUSED,
    INVALID_PARAMS: exitcodes.USAGE,
}


def exit_code_for(error: RpcError) -> int:
    """The sengadm exit code for a daemon error (refusals 1, bad parameters 2, others 1)."""
    return _EXIT_BY_CODE.get(error.code, exitcodes.REFUSED)


def run(
    args: argparse.Namespace,
    method: str,
    params: dict[str, Any] | None,
    render: Callable[[Any], None],
) -> int:
    """Call `method`; print the result as JSON with --json, else with `render`."""
    try:
        with Client(args.socket) as client:
            result = client.call(method, params)
    except Unreachable as exc:
        print(f"sengadm: daemon unreachable: {exc}", file=sys.stderr)
        return exitcodes.UNREACHABLE
    except RpcError as exc:
        print(f"sengadm: {method}: {exc.message}", file=sys.stderr)
        return exit_code_for(exc)
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        render(result)
    return exitcodes.OK


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as network tools print)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines)
