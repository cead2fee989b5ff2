"""The `sengadm` dashboard: a Textual app that watches and steers sengd through its RPC socket.

`SengDashboard(socket_path).run()` opens it. It talks to the daemon only through the control
socket (`sengadm.aclient.Link`: hello, event subscription, calls; reconnecting with backoff
when the daemon goes away), never to the database. Everything it knows is in one
`GatewayState` (`self.state`); the link feeds it events as they arrive and the app polls
`sessions.list` every `refresh` seconds for byte counters and rates (there is no per-session
event for those). Screens are told what changed through `StateChanged` messages, batched so
that at most `1 / flush_interval` redraws a second happen however many events arrive.

Places are modes (sessions, events, allowlist, subnets: keys 1-4), dialogs are modal screens.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen

from sengadm.aclient import Backoff, Link, LinkDown, LinkState, LinkUp
from sengadm.client import Unreachable
from sengadm.tui.messages import KillSession, ShowSession, StateChanged
from sengadm.tui.screens.allowlist import AllowlistScreen
from sengadm.tui.screens.events import EventsScreen
from sengadm.tui.screens.help import HelpScreen
from sengadm.tui.screens.kill import KillScreen
from sengadm.tui.screens.session_detail import SessionDetailScreen
from sengadm.tui.screens.sessions import SessionsScreen
from sengadm.tui.screens.subnets import SubnetsScreen
from sengadm.tui.state import Clock, GatewayState, utc_now
from sengd.rpc.protocol import RpcError

log = logging.getLogger("sengadm.tui")

DENIALS_LOADED = 200
STATUS_EVERY = 10.0
"""Seconds between `status` polls (uptime, listen address; counters come with `stats`)."""


class SengDashboard(App[int]):
    """The dashboard of one gateway (see the module doc)."""

    TITLE = "sengadm"
    CSS_PATH = "styles.tcss"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "sessions": SessionsScreen,
        "events": EventsScreen,
        "allowlist": AllowlistScreen,
        "subnets": SubnetsScreen,
    }
    DEFAULT_MODE = "sessions"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("1", "switch_mode('sessions')", "Sessions"),
        Binding("2", "switch_mode('events')", "Events"),
        Binding("3", "switch_mode('allowlist')", "Allowlist"),
        Binding("4", "switch_mode('subnets')", "Subnets"),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("ctrl+r", "reload", "Reload", show=False),
    ]

    def __init__(
        self,
        socket_path: Path | str,
        *,
        clock: Clock = utc_now,
        refresh: float = 2.0,
        flush_interval: float = 0.2,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__()
        self.socket_path = str(socket_path)
        self.state = GatewayState(clock)
        self.refresh_interval = refresh
        self.flush_interval = flush_interval
        self.link = Link(self.socket_path, self._on_event, self._on_link, backoff)
        self._dirty: set[str] = set()
        self._polling = False
        self._store_stale = False
        self._last_status = 0.0
        self._gc_frozen = False
        self.timings: dict[str, list[float]] = {}
        """Durations (seconds) of the app's own work by kind, for the benchmark."""

    # -- lifecycle -----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.run_worker(self.link.run(), name="link", group="link", exit_on_error=True)
        self.set_interval(self.flush_interval, self._send_changes)
        self.set_interval(self.refresh_interval, self._poll)

    async def on_unmount(self) -> None:
        self.link.stop()

    # -- the link ------------------------------------------------------------------------------

    def _on_event(self, name: str, params: dict[str, Any]) -> None:
        parts = self.state.apply_event(name, params)
        if "admin" in parts:
            self._store_stale = True
            parts.discard("admin")
        self._dirty |= parts

    async def _on_link(self, link_state: LinkState) -> None:
        if isinstance(link_state, LinkUp):
            self.state.link_up(link_state.hello)
            self._dirty |= {"link", "log"}
            await self.load_all()
            if not self._gc_frozen:
                # Everything built so far (widgets, styles, the first data) lives as long as
                # the app: keep it out of the cyclic collector's full passes, which otherwise
                # stall the UI for 100-300 ms every few polls of 1,000 sessions. Session data
                # replaced later holds no cycles and is freed by reference counting anyway.
                gc.collect()
                gc.freeze()
                self._gc_frozen = True
        elif isinstance(link_state, LinkDown):
            self.state.link_down(
                link_state.reason, link_state.retry_in, link_state.attempt, link_state.fatal
            )
            self._dirty |= {"link", "log"}
        self._send_changes()

    async def load_all(self) -> None:
        """Load everything the dashboard shows (after connecting, and on ctrl+r)."""
        try:
            self.state.load_status(await self.link.call("status"))
            self._last_status = time.monotonic()
            await self._load_sessions()
            self.state.load_denials(
                await self.link.call("denials.recent", {"limit": DENIALS_LOADED})
            )
            await self.load_store()
        except (Unreachable, RpcError) as exc:
            log.debug("loading failed: %s", exc)  # the link reports a broken connection
        self._dirty |= {"stats", "sessions", "log", "allowlist", "subnets"}

    async def load_store(self) -> None:
        """Reload the allowlist and the subnets (after a change)."""
        self._store_stale = False
        self.state.load_allowlist(await self.link.call("allowlist.list"))
        self.state.load_subnets(await self.link.call("subnets.list"))
        self._dirty |= {"allowlist", "subnets"}

    async def _load_sessions(self) -> None:
        seq = self.state.event_seq
        sessions = await self.link.call("sessions.list")
        started = time.perf_counter()
        if self.state.load_sessions(sessions, seq):
            self._dirty.add("sessions")
        self.record_timing("load_sessions", started)

    async def _poll(self) -> None:
        if self._polling or not self.link.connected:
            return
        self._polling = True
        try:
            await self._load_sessions()
            if time.monotonic() - self._last_status >= STATUS_EVERY:
                self.state.load_status(await self.link.call("status"))
                self._last_status = time.monotonic()
                self._dirty.add("stats")
            if self._store_stale:
                await self.load_store()
        except (Unreachable, RpcError) as exc:
            log.debug("poll failed: %s", exc)
        finally:
            self._polling = False

    def _send_changes(self) -> None:
        if not self._dirty:
            return
        parts = frozenset(self._dirty)
        self._dirty.clear()
        self.screen.post_message(StateChanged(parts))

    def record_timing(self, kind: str, started: float) -> None:
        """Record how long a piece of work took since `perf_counter()` was `started` (the
        last 10,000 of each kind, for the benchmark)."""
        samples = self.timings.setdefault(kind, [])
        if len(samples) >= 10000:
            del samples[:1000]
        samples.append(time.perf_counter() - started)

    # -- calls from the screens ----------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call `method` on the daemon (`Unreachable`, `RpcError` on failure)."""
        return await self.link.call(method, params)

    @property
    def is_admin(self) -> bool:
        """True when the daemon said we may change things."""
        return self.state.role == "admin"

    def require_admin(self) -> bool:
        """True if admin actions are possible now; otherwise say why and return False."""
        if not self.state.connected:
            self.notify("Not connected to the daemon.", severity="error")
            return False
        if not self.is_admin:
            self.notify(
                f"Read-only: {self.state.hello.get('user', 'you')} is a monitor, not an admin.",
                severity="warning",
            )
            return False
        return True

    # -- messages from the screens -------------------------------------------------------------

    def on_show_session(self, message: ShowSession) -> None:
        self.push_screen(SessionDetailScreen(message.enclave_ip))

    def on_kill_session(self, message: KillSession) -> None:
        session = self.state.sessions.get(message.enclave_ip)
        if session is None or not self.require_admin():
            return

        async def answered(reason: str | None) -> None:
            if reason is not None:
                await self.kill(message.enclave_ip, reason)

        self.push_screen(KillScreen(session), answered)

    async def kill(self, enclave_ip: str, reason: str) -> bool:
        """Close the session holding `enclave_ip`, saying why; True if the daemon did."""
        try:
            result = await self.call("sessions.kill", {"enclave_ip": enclave_ip, "reason": reason})
        except (RpcError, Unreachable) as exc:
            message = exc.message if isinstance(exc, RpcError) else str(exc)
            self.notify(f"Kill {enclave_ip} refused: {message}", severity="error")
            return False
        self.notify(f"Closed {result.get('killed', enclave_ip)} ({result.get('app') or '-'}).")
        return True

    # -- actions -------------------------------------------------------------------------------

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_reload(self) -> None:
        if self.link.connected:
            await self.load_all()
            self._send_changes()
