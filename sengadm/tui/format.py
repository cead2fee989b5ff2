"""How the dashboard writes numbers, times and durations (pure functions, no Textual)."""

from __future__ import annotations

from datetime import UTC, datetime


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as network tools print)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_rate(bytes_per_s: float) -> str:
    """Bytes per second as '1.2 MB/s'; '-' for nothing."""
    return "-" if bytes_per_s <= 0 else f"{human_bytes(bytes_per_s)}/s"


def duration(seconds: float) -> str:
    """A compact duration: '42s', '5m07s', '3h02m', '4d07h'."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time from the daemon (UTC when it has no zone); None if unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def clock_time(text: str | None) -> str:
    """The time of day (UTC) of an ISO time, 'HH:MM:SS'; '?' if unreadable."""
    moment = parse_time(text)
    return "?" if moment is None else moment.astimezone(UTC).strftime("%H:%M:%S")


def since(text: str | None, now: datetime) -> str:
    """How long ago an ISO time was, as `duration`; '?' if unreadable."""
    moment = parse_time(text)
    return "?" if moment is None else duration((now - moment).total_seconds())


def short_hex(value: str | None, width: int = 16) -> str:
    """The first `width` hex digits of a measurement, with an ellipsis; '-' for none."""
    if not value:
        return "-"
    return value if len(value) <= width else value[:width] + "…"


def compact_bytes(n: float) -> str:
    """Bytes in at most five characters for table columns: '512', '1.2k', '34k', '1.2M'."""
    value = float(n)
    if value < 1000:
        return f"{value:.0f}"
    for unit in ("k", "M", "G", "T"):
        value /= 1000
        if value < 9.95:
            return f"{value:.1f}{unit}"
        if value < 999.5:
            return f"{value:.0f}{unit}"
    return f"{value / 1000:.0f}P"
