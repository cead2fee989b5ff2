"""The events log: denials with their reasons in words, sessions up and down, admin changes.

Newest last; while the cursor is on the newest line the log follows new lines (like
`tail -f`). The line under the cursor is explained in full in the panel below the table.
"""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import DataTable, Static

from sengadm.tui.context import dashboard
from sengadm.tui.format import clock_time
from sengadm.tui.state import LogEntry
from sengadm.tui.widgets.table import Cell, Column, KeyedTable, Row, cell

COLUMNS = (
    Column("at", "TIME", 8),
    Column("kind", "EVENT", 6),
    Column("subject", "WHO", 21),
    Column("app", "APP", 10),
    Column("why", "WHY", 28),
)

KINDS: dict[str, tuple[str, str]] = {
    "denial": ("denied", "bold red"),
    "session.up": ("up", "green"),
    "session.down": ("down", "yellow"),
    "admin.change": ("admin", "cyan"),
    "link": ("link", "magenta"),
}


def entry_row(entry: LogEntry) -> tuple[Cell, ...]:
    """The cells of one log entry."""
    label, style = KINDS.get(entry.kind, (entry.kind, ""))
    why = f"{entry.code}: {entry.words}" if entry.code else entry.words
    return (
        cell(clock_time(entry.at)),
        cell(label, style),
        cell(entry.subject),
        cell(entry.app or "-"),
        cell(why),
    )


def entry_matches(entry: LogEntry, needle: str, denials_only: bool) -> bool:
    """True if the entry passes the log's filter."""
    if denials_only and entry.kind != "denial":
        return False
    if not needle:
        return True
    fields = (entry.kind, entry.subject, entry.app, entry.code, entry.words, entry.detail)
    return any(needle in f.lower() for f in fields)


def explanation(entry: LogEntry | None) -> Table | Text:
    """The panel under the log: everything about one entry."""
    if entry is None:
        return Text(" No events yet.", style="dim")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, width=9)
    grid.add_column(overflow="fold")
    label, style = KINDS.get(entry.kind, (entry.kind, ""))
    data: dict[str, Any] = entry.data
    when = f"{clock_time(entry.at)} UTC"
    if entry.kind == "denial":
        when += f", {entry.subject}, tunnel {data.get('tunnel', '?')}"
    elif entry.subject and entry.kind != "link":
        when += f", {entry.subject}"
    grid.add_row(Text(label, style=style), Text(when))
    if entry.code:
        grid.add_row("reason", Text(f"{entry.code}: {entry.words}"))
    else:
        grid.add_row("what", Text(entry.words))
    if entry.detail:
        grid.add_row("detail", Text(entry.detail))
    if data.get("mr_enclave"):
        grid.add_row("MRENCLAVE", Text(str(data["mr_enclave"])))
    return grid


class EventLog(KeyedTable):
    """The log table (see the module doc); `detail` is the panel it explains rows in."""

    def __init__(self, detail: Static, **kwargs: Any) -> None:
        super().__init__(COLUMNS, **kwargs)
        self.detail = detail
        self.filter_text = ""
        self.denials_only = False
        self._synced: tuple[int, str, bool] | None = None
        self._entries: dict[str, LogEntry] = {}

    def sync(self, force: bool = False) -> None:
        """Show the state's log (if it or the filter changed)."""
        app = dashboard(self)
        state = app.state
        key = (state.log_version, self.filter_text, self.denials_only)
        if key == self._synced and not force:
            return
        started = time.perf_counter()
        self._synced = key
        needle = self.filter_text.lower()
        entries = [e for e in state.log if entry_matches(e, needle, self.denials_only)]
        self._entries = {str(e.seq): e for e in entries}
        follow = self.cursor_key is None or self.cursor_row >= self.row_count - 1
        rows: list[Row] = [(str(e.seq), entry_row(e)) for e in entries]
        self.set_rows(rows)
        if follow and self.row_count:
            self.move_cursor(row=self.row_count - 1, animate=False)
        self._explain()
        app.record_timing("log_sync", started)

    def selected(self) -> LogEntry | None:
        """The entry under the cursor."""
        key = self.cursor_key
        return None if key is None else self._entries.get(key)

    def _explain(self) -> None:
        self.detail.update(explanation(self.selected()))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._explain()
