"""The events place: why enclaves were refused, who came and went, what admins changed."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Static

from sengadm.tui.screens.base import PlaceScreen
from sengadm.tui.widgets.event_log import EventLog


class EventsScreen(PlaceScreen):
    """The log with a filter line above and the explanation panel below."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("d", "denials_only", "Denials only"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def body(self) -> ComposeResult:
        detail = Static(id="explain")
        with Horizontal(classes="filter-bar"):
            yield Input(placeholder="filter: host, reason, app… (/)", id="filter", compact=True)
            yield Static(id="count")
        yield EventLog(detail, id="log")
        yield detail

    def on_mount(self) -> None:
        self.query_one(EventLog).focus()

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        log = self.query_one(EventLog)
        log.sync()
        what = "denials" if log.denials_only else "events"
        self.query_one("#count", Static).update(f" {log.row_count} {what} ")

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_one(EventLog).filter_text = event.value.strip()
            self.sync(frozenset({"log"}))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(EventLog).focus()

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(EventLog).focus()

    def action_denials_only(self) -> None:
        log = self.query_one(EventLog)
        log.denials_only = not log.denials_only
        self.sync(frozenset({"log"}))
