"""The live sessions table: one row per enclave, sortable, filterable, updated in place.

Rows are keyed by enclave IP. `sync()` rebuilds the wanted rows from the state (only when the
sessions, the filter or the order changed) and hands them to `KeyedTable.set_rows`, which
changes only the cells that differ. Clicking a column header sorts by it (again: reversed);
Enter posts `ShowSession`, `k` posts `KillSession` for the row under the cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from ipaddress import IPv4Address
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from sengadm.tui.context import dashboard
from sengadm.tui.format import compact_bytes, since
from sengadm.tui.messages import KillSession, ShowSession
from sengadm.tui.widgets.table import Cell, Column, KeyedTable, Row, cell

COLUMNS = (
    Column("ip", "ENCLAVE IP", 15),
    Column("app", "APP", 10),
    Column("host", "HOST", 15),
    Column("since", "SINCE", 6, numeric=True),
    Column("rx_rate", "RX/s", 6, numeric=True),
    Column("tx_rate", "TX/s", 6, numeric=True),
    Column("rx", "RX", 6, numeric=True),
    Column("tx", "TX", 6, numeric=True),
)


def _ip_number(text: Any) -> int:
    try:
        return int(IPv4Address(str(text)))
    except ValueError:
        return 0


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


SORT_KEYS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ip": lambda s: _ip_number(s.get("enclave_ip")),
    "app": lambda s: (str(s.get("app", "")).lower(), _ip_number(s.get("enclave_ip"))),
    "host": lambda s: (_ip_number(s.get("host")), _number(s.get("host_port"))),
    "since": lambda s: str(s.get("since", "")),
    "rx_rate": lambda s: _number(s.get("rx_bytes_per_s")),
    "tx_rate": lambda s: _number(s.get("tx_bytes_per_s")),
    "rx": lambda s: _number(s.get("rx_bytes")),
    "tx": lambda s: _number(s.get("tx_bytes")),
}
"""How each column sorts (on the values, not on their text)."""

SEARCHED = ("enclave_ip", "app", "host", "mr_enclave", "mr_signer", "state", "subnet")


def matches(session: dict[str, Any], needle: str) -> bool:
    """True if `needle` (lower case) occurs in one of the session's searched fields."""
    if not needle:
        return True
    fields = [str(session.get(k, "")) for k in SEARCHED]
    fields += [str(c) for c in session.get("categories") or ()]
    return any(needle in f.lower() for f in fields)


def session_row(session: dict[str, Any], now: datetime) -> tuple[Cell, ...]:
    """The cells of one session."""
    active = session.get("state") == "active"
    style = "" if active else "dim italic"
    return (
        cell(session.get("enclave_ip", "?"), style),
        cell(session.get("app") or "-", style),
        cell(session.get("host", "?"), style),
        cell(since(session.get("since"), now), style),
        cell(compact_bytes(_number(session.get("rx_bytes_per_s"))), style),
        cell(compact_bytes(_number(session.get("tx_bytes_per_s"))), style),
        cell(compact_bytes(_number(session.get("rx_bytes"))), style),
        cell(compact_bytes(_number(session.get("tx_bytes"))), style),
    )


class SessionsTable(KeyedTable):
    """The sessions (see the module doc)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "show", "Details"),
        Binding("k", "kill", "Kill"),
        Binding("s", "next_sort", "Sort"),
        Binding("r", "reverse_sort", "Reverse"),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(COLUMNS, **kwargs)
        self.sort_column = "ip"
        self.sort_reverse = False
        self.filter_text = ""
        self.shown = 0
        self._synced: tuple[int, str, str, bool, int] | None = None

    def sync(self, force: bool = False) -> None:
        """Show the state's sessions (if they, the filter or the order changed; the SINCE
        column changes with the clock, so it is redrawn at least every second anyway)."""
        app = dashboard(self)
        state = app.state
        second = int(state.clock().timestamp())
        key = (
            state.sessions_version,
            self.filter_text,
            self.sort_column,
            self.sort_reverse,
            second,
        )
        if key == self._synced and not force:
            return
        started = time.perf_counter()
        self._synced = key
        needle = self.filter_text.lower()
        sessions = [s for s in state.sessions.values() if matches(s, needle)]
        sort_key = SORT_KEYS[self.sort_column]
        sessions.sort(
            key=lambda s: (sort_key(s), _ip_number(s.get("enclave_ip"))), reverse=self.sort_reverse
        )
        now = state.clock()
        rows: list[Row] = [(str(s.get("enclave_ip")), session_row(s, now)) for s in sessions]
        self.set_rows(rows)
        self.shown = len(rows)
        app.record_timing("sessions_sync", started)

    def _label_columns(self) -> None:
        for spec in self.column_specs:
            label = spec.label
            if spec.key == self.sort_column:
                label += "▼" if self.sort_reverse else "▲"
            text = Text(label, justify="right" if spec.numeric else "left")
            self.columns[ColumnKey(spec.key)].label = text if spec.numeric else Text(" ") + text
        self.refresh()

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by `column`; the same column again reverses the order."""
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._label_columns()
        self.sync()

    def columns_added(self) -> None:
        self._label_columns()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        if event.column_key.value in SORT_KEYS:
            self.sort_by(str(event.column_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(ShowSession(event.row_key.value))

    def action_show(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(ShowSession(key))

    def action_kill(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(KillSession(key))

    def action_next_sort(self) -> None:
        keys = [c.key for c in COLUMNS]
        self.sort_by(keys[(keys.index(self.sort_column) + 1) % len(keys)], self.sort_reverse)

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, not self.sort_reverse)
