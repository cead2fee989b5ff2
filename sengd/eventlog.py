"""Operator logs: one logfmt line per event (`event=session-up enclave_ip=... app=...`).

Lines are meant for people and for log shippers alike: a stable `event` name first, then the
fields in the order given, values quoted only when they need it. Nothing here is called per
packet at info level, and callers never pass key material.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_NEEDS_QUOTES = frozenset(' "=\t\n')


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if not text or any(c in _NEEDS_QUOTES for c in text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return text


def format_event(name: str, fields: dict[str, Any]) -> str:
    """`event=NAME k=v ...` with values rendered for humans (bytes as hex, None as -)."""
    parts = [f"event={name}"]
    parts.extend(f"{key}={_format_value(value)}" for key, value in fields.items())
    return " ".join(parts)


def emit(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log one event line at `level` (formatting is skipped when the level is disabled)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", format_event(name, fields))


def setup(level: str) -> None:
    """Send logs to stderr, systemd style: `LEVEL logger: message` (journald adds the time)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Schema migrations report themselves as one sengd event; alembic's own lines are noise.
    if level != "debug":
        logging.getLogger("alembic").setLevel(logging.WARNING)
