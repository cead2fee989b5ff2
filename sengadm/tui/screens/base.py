"""What every place of the dashboard has: the gateway header, a body, the key footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from sengadm.tui.context import dashboard
from sengadm.tui.messages import StateChanged
from sengadm.tui.widgets.header import GatewayHeader

ALL_PARTS = frozenset({"link", "stats", "sessions", "log", "allowlist", "subnets"})


class PlaceScreen(Screen[None]):
    """A place (sessions, events, allowlist, subnets): header, `body()`, footer.

    The app sends `StateChanged` to the active screen only; a place that comes back into view
    catches up on everything (`on_screen_resume`).
    """

    def compose(self) -> ComposeResult:
        yield GatewayHeader()
        yield from self.body()
        yield Footer(compact=True)

    def body(self) -> ComposeResult:
        """The place's own widgets."""
        return ()

    def on_state_changed(self, message: StateChanged) -> None:
        self.sync(message.parts)

    def on_screen_resume(self) -> None:
        self.sync(ALL_PARTS)

    def sync(self, parts: frozenset[str]) -> None:
        """Show what changed (`parts` of the state); subclasses add their own widgets."""
        if parts & {"link", "stats", "sessions"}:
            self.query_one(GatewayHeader).sync()
        self.set_class(not dashboard(self).state.connected, "-stale")
