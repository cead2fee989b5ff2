"""The sessions place: who is connected, since when, moving how much."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Static

from sengadm.tui.context import dashboard
from sengadm.tui.screens.base import PlaceScreen
from sengadm.tui.widgets.sessions_table import SessionsTable


class SessionsScreen(PlaceScreen):
    """The live sessions table with a filter line above it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def body(self) -> ComposeResult:
        with Horizontal(classes="filter-bar"):
            yield Input(
                placeholder="filter: ip, app, host, MRENCLAVE… (/)", id="filter", compact=True
            )
            yield Static(id="count")
        yield SessionsTable(id="sessions")

    def on_mount(self) -> None:
        self.query_one(SessionsTable).focus()

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        table = self.query_one(SessionsTable)
        table.sync()
        total = len(dashboard(self).state.sessions)
        shown = f"{table.shown} of {total}" if table.filter_text else str(total)
        self.query_one("#count", Static).update(f" {shown} session{'s' * (total != 1)} ")

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            table = self.query_one(SessionsTable)
            table.filter_text = event.value.strip()
            self.sync(frozenset({"sessions"}))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one(SessionsTable).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        filter_input = self.query_one("#filter", Input)
        if filter_input.value:
            filter_input.value = ""
        self.query_one(SessionsTable).focus()
