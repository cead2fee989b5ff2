"""The enclave subnets table: networks, gateways, the default, who routes there, who is in."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import DataTable, Static

from sengadm.tui.context import dashboard
from sengadm.tui.widgets.table import Cell, Column, KeyedTable, Row, cell

COLUMNS = (
    Column("name", "NAME", 12),
    Column("network", "NETWORK", 18),
    Column("gateway", "GATEWAY", 15),
    Column("default", "DEF", 3),
    Column("live", "LIVE", 4, numeric=True),
    Column("leases", "LEASES", 6, numeric=True),
    Column("entries", "ENTRIES", 14),
)


def subnet_row(subnet: dict[str, Any], live: int) -> tuple[Cell, ...]:
    """The cells of one subnet."""
    return (
        cell(subnet.get("name", "?")),
        cell(subnet.get("network", "?")),
        cell(subnet.get("gateway", "?")),
        cell("*" if subnet.get("default") else "", "bold green"),
        cell(live, "bold" if live else ""),
        cell(subnet.get("open_leases", 0)),
        cell(", ".join(subnet.get("entries") or ()) or "-"),
    )


def subnet_detail(subnet: dict[str, Any] | None) -> Table | Text:
    """The panel under the table: the subnet in full."""
    if subnet is None:
        return Text(" No enclave subnets. Press a to add one.", style="dim")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, width=11)
    grid.add_column(overflow="fold")
    default = "yes (routes without =SUBNET lead here)" if subnet.get("default") else "no"
    if subnet.get("marked_default") and not subnet.get("default"):
        default += " (marked)"
    grid.add_row("default", Text(default))
    grid.add_row("addresses", Text(f"{subnet.get('addresses', '?')} assignable"))
    grid.add_row("entries", Text(", ".join(subnet.get("entries") or ()) or "none"))
    if subnet.get("description"):
        grid.add_row("description", Text(str(subnet["description"])))
    return grid


class SubnetsTable(KeyedTable):
    """The subnets, keyed by id; `detail` is the panel that shows the selected one."""

    def __init__(self, detail: Static, **kwargs: Any) -> None:
        super().__init__(COLUMNS, **kwargs)
        self.detail = detail
        self._synced: tuple[int, int] | None = None
        self._subnets: dict[str, dict[str, Any]] = {}

    def sync(self, force: bool = False) -> None:
        """Show the state's subnets (if they or the sessions changed)."""
        state = dashboard(self).state
        key = (state.subnets_version, state.sessions_version)
        if key == self._synced and not force:
            return
        self._synced = key
        live: dict[str, int] = {}
        for session in state.sessions.values():
            live[str(session.get("subnet"))] = live.get(str(session.get("subnet")), 0) + 1
        self._subnets = {str(s.get("id")): s for s in state.subnets}
        rows: list[Row] = [
            (str(s.get("id")), subnet_row(s, live.get(str(s.get("network")), 0)))
            for s in state.subnets
        ]
        self.set_rows(rows)
        self._explain()

    def selected(self) -> dict[str, Any] | None:
        """The subnet under the cursor."""
        key = self.cursor_key
        return None if key is None else self._subnets.get(key)

    def _explain(self) -> None:
        self.detail.update(subnet_detail(self.selected()))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._explain()
