"""What the dashboard knows about the gateway: one object, fed by RPC answers and events.

Pure (no Textual, no I/O): the app feeds it `rpc.hello`, `status`, `sessions.list`,
`denials.recent`, `allowlist.list` and `subnets.list` answers and every event notification;
widgets read from it. Each part carries a version number that changes when the part does, so
widgets redraw only what changed. Time comes from the `clock` given (frozen in snapshot tests).

Sessions come from two sources that may cross: `session.up`/`session.down` events and periodic
`sessions.list` polls. A poll answer is taken with the event sequence number at which it was
requested, so that it neither brings back a session whose `session.down` came meanwhile nor
drops one whose `session.up` came meanwhile.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sengadm.tui import reasons
from sengadm.tui.format import parse_time

Clock = Callable[[], datetime]
HISTORY = 120
"""Throughput samples kept for the sparkline (one per `stats` event: a second each)."""
LOG_SIZE = 1000
"""Events kept in the log."""
RATE_WINDOW = 60
"""`stats` samples (one a second, counted by the daemon's clock) per-minute figures span."""
ENDED_KEPT = 1024


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of the events log."""

    at: str  # ISO time
    kind: str  # "session.up", "session.down", "denial", "admin.change", "link"
    subject: str  # enclave IP, host:port, or the method
    app: str
    code: str  # reason code ("" if none)
    words: str  # the reason (or what happened) in words
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False)
    seq: int = field(default=0, compare=False)
    """Unique per state, in order of arrival."""


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """The connection to the daemon as the operator should see it."""

    state: str  # "connecting", "connected", "disconnected", "refused"
    reason: str = ""
    retry_at: datetime | None = None
    attempt: int = 0


def _sum_prefixed(counts: dict[str, Any], prefixes: Iterable[str]) -> int:
    total = 0
    for key, value in counts.items():
        if isinstance(value, int) and any(key == p or key.startswith(p) for p in prefixes):
            total += value
    return total


_EPOCH = datetime.fromtimestamp(0, UTC)


def _log_order(entry: LogEntry) -> tuple[datetime, int]:
    return (parse_time(entry.at) or _EPOCH, entry.seq)


class GatewayState:
    """The dashboard's model of one gateway."""

    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock
        self.link = LinkStatus("connecting")
        self.link_version = 0
        self.hello: dict[str, Any] = {}
        self.status: dict[str, Any] = {}
        self.status_at: datetime | None = None
        self.stats: dict[str, Any] = {}
        self.rx_history: deque[float] = deque(maxlen=HISTORY)
        self.tx_history: deque[float] = deque(maxlen=HISTORY)
        self._counters: deque[tuple[int, int]] = deque(maxlen=RATE_WINDOW + 1)
        self.stats_version = 0
        self.sessions: dict[str, dict[str, Any]] = {}
        self.sessions_version = 0
        self.ended: dict[str, dict[str, Any]] = {}
        """Sessions seen closing (by enclave IP, the last one), with their `reason`."""
        self._ended_ids: deque[int] = deque(maxlen=ENDED_KEPT)
        self._added_seq: dict[str, int] = {}
        self.event_seq = 0
        self.log: deque[LogEntry] = deque(maxlen=LOG_SIZE)
        self.log_version = 0
        self._log_seq = 0
        self.allowlist: list[dict[str, Any]] = []
        self.allowlist_version = 0
        self.subnets: list[dict[str, Any]] = []
        self.subnets_version = 0

    # -- the link ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the daemon is connected."""
        return self.link.state == "connected"

    @property
    def role(self) -> str:
        """`admin` or `monitor` (what the daemon said we are), '' before it said."""
        return str(self.hello.get("role", ""))

    def link_up(self, hello: dict[str, Any]) -> None:
        """Connected (again): a restarted daemon numbers its sessions afresh."""
        self.hello = dict(hello)
        self.link = LinkStatus("connected")
        self.link_version += 1
        self._ended_ids.clear()
        self._counters.clear()
        self._log("link", "sengd", "", "", f"connected to gateway {hello.get('gateway', '?')}")

    def link_down(self, reason: str, retry_in: float, attempt: int, fatal: bool = False) -> None:
        """Not connected; retrying in `retry_in` seconds (unless `fatal`)."""
        was_connected = self.connected
        now = self.clock()
        self.link = (
            LinkStatus("refused", reason)
            if fatal
            else LinkStatus("disconnected", reason, now + timedelta(seconds=retry_in), attempt)
        )
        self.link_version += 1
        if was_connected or fatal:
            self._log("link", "sengd", "", "", f"disconnected: {reason}")

    # -- answers -------------------------------------------------------------------------------

    def load_status(self, status: dict[str, Any]) -> None:
        """A `status` answer."""
        self.status = dict(status)
        self.status_at = self.clock()
        self.stats_version += 1

    def load_sessions(self, sessions: list[dict[str, Any]], requested_seq: int) -> bool:
        """A `sessions.list` answer requested at event sequence `requested_seq`; True if the
        sessions changed."""
        ended = set(self._ended_ids)
        fresh: dict[str, dict[str, Any]] = {}
        for session in sessions:
            ip = session.get("enclave_ip")
            if isinstance(ip, str) and session.get("id") not in ended:
                fresh[ip] = session
        for ip, session in self.sessions.items():
            if ip not in fresh and self._added_seq.get(ip, -1) > requested_seq:
                fresh[ip] = session  # came up after the poll was sent
        if fresh == self.sessions:
            return False
        self._added_seq = {ip: s for ip, s in self._added_seq.items() if ip in fresh}
        self.sessions = fresh
        self.sessions_version += 1
        return True

    def load_denials(self, denials: list[dict[str, Any]]) -> None:
        """A `denials.recent` answer (oldest first): the log starts with them."""
        known = {(e.at, e.subject, e.code) for e in self.log if e.kind == "denial"}
        for denial in denials:
            entry = self._denial_entry(denial)
            if (entry.at, entry.subject, entry.code) not in known:
                self.log.append(entry)
        ordered = sorted(self.log, key=_log_order)
        self.log = deque(ordered, maxlen=LOG_SIZE)
        self.log_version += 1

    def load_allowlist(self, entries: list[dict[str, Any]]) -> None:
        """An `allowlist.list` answer."""
        self.allowlist = list(entries)
        self.allowlist_version += 1

    def load_subnets(self, subnets: list[dict[str, Any]]) -> None:
        """A `subnets.list` answer."""
        self.subnets = list(subnets)
        self.subnets_version += 1

    # -- events --------------------------------------------------------------------------------

    def apply_event(self, name: str, params: dict[str, Any]) -> set[str]:
        """One event notification; returns the parts that changed ("sessions", "log",
        "stats", "admin": the allowlist or subnets should be reloaded)."""
        self.event_seq += 1
        handler = self._handlers.get(name)
        return set() if handler is None else handler(self, params)

    def _on_stats(self, params: dict[str, Any]) -> set[str]:
        self._stats(params)
        return {"stats"}

    def _on_session_up(self, params: dict[str, Any]) -> set[str]:
        ip = params.get("enclave_ip")
        if not isinstance(ip, str):
            return set()
        self.sessions[ip] = dict(params)
        self._added_seq[ip] = self.event_seq
        self.ended.pop(ip, None)
        self.sessions_version += 1
        where = f"from {params.get('host', '?')}"
        self._log("session.up", ip, str(params.get("app", "")), "", where, data=params)
        return {"sessions", "log"}

    def _on_session_down(self, params: dict[str, Any]) -> set[str]:
        ip = params.get("enclave_ip")
        if not isinstance(ip, str):
            return set()
        session_id = params.get("id")
        if isinstance(session_id, int):
            self._ended_ids.append(session_id)
        current = self.sessions.get(ip)
        if current is not None and current.get("id") == session_id:
            del self.sessions[ip]
            self._added_seq.pop(ip, None)
            self.sessions_version += 1
        self.ended[ip] = dict(params)
        code = str(params.get("reason", ""))
        self._log(
            "session.down",
            ip,
            str(params.get("app", "")),
            code.partition(":")[0],
            reasons.explain_end(code),
            data=params,
        )
        return {"sessions", "log"}

    def _on_denial(self, params: dict[str, Any]) -> set[str]:
        self.log.append(self._denial_entry(params))
        self.log_version += 1
        return {"log"}

    def _on_admin_change(self, params: dict[str, Any]) -> set[str]:
        closed = params.get("closed_sessions") or []
        words = f"by {params.get('actor', '?')}"
        if closed:
            words += f", closed {', '.join(str(c) for c in closed)}"
        self._log("admin.change", str(params.get("method", "?")), "", "", words, data=params)
        return {"log", "admin"}

    def _on_dropped(self, params: dict[str, Any]) -> set[str]:
        self._log("link", "sengd", "", "", f"events dropped: {params.get('reason', '')}")
        return {"log"}

    _handlers: ClassVar[dict[str, Callable[[GatewayState, dict[str, Any]], set[str]]]] = {
        "stats": _on_stats,
        "session.up": _on_session_up,
        "session.down": _on_session_down,
        "denial": _on_denial,
        "admin.change": _on_admin_change,
        "events.dropped": _on_dropped,
    }

    def _stats(self, params: dict[str, Any]) -> None:
        self.stats = dict(params)
        self.rx_history.append(float(params.get("rx_bytes_per_s", 0) or 0))
        self.tx_history.append(float(params.get("tx_bytes_per_s", 0) or 0))
        counts = params.get("handshakes")
        if isinstance(counts, dict):
            handshakes = _sum_prefixed(counts, ("admitted", "paired", "denied:", "failed:"))
            denials = _sum_prefixed(counts, ("denied:",))
            self._counters.append((handshakes, denials))
        self.stats_version += 1

    def _next_seq(self) -> int:
        self._log_seq += 1
        return self._log_seq

    def _denial_entry(self, denial: dict[str, Any]) -> LogEntry:
        code = str(denial.get("reason", ""))
        return LogEntry(
            at=str(denial.get("at", "")),
            kind="denial",
            subject=f"{denial.get('host', '?')}:{denial.get('port', '?')}",
            app=str(denial.get("app") or ""),
            code=code,
            words=reasons.explain_denial(code),
            detail=str(denial.get("detail", "")),
            data=dict(denial),
            seq=self._next_seq(),
        )

    def _log(
        self,
        kind: str,
        subject: str,
        app: str,
        code: str,
        words: str,
        *,
        data: dict[str, Any] | None = None,
    ) -> None:
        when = self.clock().isoformat()  # when the event arrived
        self.log.append(
            LogEntry(
                when, kind, subject, app, code, words, data=dict(data or {}), seq=self._next_seq()
            )
        )
        self.log_version += 1

    # -- derived figures -----------------------------------------------------------------------

    def uptime_s(self) -> float | None:
        """The daemon's uptime now (from the last `status` answer)."""
        base = self.status.get("uptime_s")
        if not isinstance(base, int | float) or self.status_at is None:
            return None
        return float(base) + (self.clock() - self.status_at).total_seconds()

    def _per_minute(self, denials: bool) -> float | None:
        # The daemon sends `stats` once a second: the samples count its seconds, whatever
        # delays their delivery. Less than a minute of samples: what happened so far.
        if len(self._counters) < 2:
            return None
        first, last = self._counters[0], self._counters[-1]
        count = last[1] - first[1] if denials else last[0] - first[0]
        return float(max(count, 0))

    def handshakes_per_minute(self) -> float | None:
        """Handshakes (admitted, paired, denied or failed) in the last minute (None: not known
        yet; over less than a minute of samples: those seen so far)."""
        return self._per_minute(denials=False)

    def denials_per_minute(self) -> float | None:
        """Denials in the last minute (None: not known yet)."""
        return self._per_minute(denials=True)

    def sessions_of_entry(self, entry_id: int) -> list[dict[str, Any]]:
        """The live sessions admitted by allowlist entry `entry_id`."""
        return [s for s in self.sessions.values() if s.get("entry_id") == entry_id]

    def sessions_in_subnet(self, network: str) -> list[dict[str, Any]]:
        """The live sessions holding an address in enclave subnet `network` (CIDR)."""
        return [s for s in self.sessions.values() if s.get("subnet") == network]

    def entry_names(self) -> list[str]:
        """The names of the allowlist entries."""
        return [str(e.get("name")) for e in self.allowlist]
