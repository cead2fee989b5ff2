"""The allowlist table: one row per entry, with its live sessions counted."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import DataTable, Static

from sengadm.tui.context import dashboard
from sengadm.tui.format import short_hex
from sengadm.tui.widgets.table import Cell, Column, KeyedTable, Row, cell

COLUMNS = (
    Column("name", "NAME", 14),
    Column("match", "MATCH", 18),
    Column("routes", "HOST ROUTES", 20),
    Column("on", "ON", 3),
    Column("live", "LIVE", 4, numeric=True),
    Column("categories", "CATEGORIES", 12),
)


def route_text(route: dict[str, Any]) -> str:
    """A host route as `CIDR=SUBNET` (the form's syntax)."""
    return f"{route.get('host_subnet')}={route.get('enclave_subnet')}"


def match_text(entry: dict[str, Any], width: int = 8) -> str:
    """What the entry matches, short."""
    if entry.get("mr_enclave"):
        return f"enclave {short_hex(entry['mr_enclave'], width)}"
    return f"signer {short_hex(entry.get('mr_signer'), width - 2)} #{entry.get('isv_prod_id')}"


def entry_row(entry: dict[str, Any], live: int) -> tuple[Cell, ...]:
    """The cells of one entry."""
    enabled = bool(entry.get("enabled"))
    style = "" if enabled else "dim"
    routes = ", ".join(str(r.get("host_subnet")) for r in entry.get("host_routes") or ())
    return (
        cell(entry.get("name", "?"), style),
        cell(match_text(entry), style),
        cell(routes or "(none)", style if routes else "red"),
        cell("yes" if enabled else "no", "green" if enabled else "red"),
        cell(live, "bold" if live else style),
        cell(", ".join(entry.get("categories") or ()) or "-", style),
    )


def entry_detail(entry: dict[str, Any] | None) -> Table | Text:
    """The panel under the table: the entry in full."""
    if entry is None:
        return Text(" No allowlist entries. Press a to add one.", style="dim")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, width=10)
    grid.add_column(overflow="fold")
    if entry.get("mr_enclave"):
        grid.add_row("MRENCLAVE", Text(str(entry["mr_enclave"])))
    if entry.get("mr_signer"):
        grid.add_row(
            "MRSIGNER",
            Text(
                f"{entry['mr_signer']} product {entry.get('isv_prod_id')} "
                f"SVN >= {entry.get('min_isv_svn', 0)}"
            ),
        )
    routes = ", ".join(route_text(r) for r in entry.get("host_routes") or ())
    grid.add_row("routes", Text(routes or "none: admits nobody"))
    policy = [
        f"debug {'allowed' if entry.get('allow_debug') else 'default'}"
        if entry.get("allow_debug") is not None
        else "debug default",
        "quote " + ",".join(entry.get("quote_statuses") or ["default"]),
        "tcb " + ",".join(entry.get("tcb_statuses") or ["default"]),
    ]
    if entry.get("denied_advisories"):
        policy.append("deny " + ",".join(entry["denied_advisories"]))
    grid.add_row("policy", Text("; ".join(policy)))
    if entry.get("comment"):
        grid.add_row("comment", Text(str(entry["comment"])))
    return grid


class AllowlistTable(KeyedTable):
    """The entries, keyed by id; `detail` is the panel that shows the selected one."""

    def __init__(self, detail: Static, **kwargs: Any) -> None:
        super().__init__(COLUMNS, **kwargs)
        self.detail = detail
        self._synced: tuple[int, int] | None = None
        self._entries: dict[str, dict[str, Any]] = {}

    def sync(self, force: bool = False) -> None:
        """Show the state's allowlist (if it or the sessions changed)."""
        state = dashboard(self).state
        key = (state.allowlist_version, state.sessions_version)
        if key == self._synced and not force:
            return
        self._synced = key
        live: dict[Any, int] = {}
        for session in state.sessions.values():
            live[session.get("entry_id")] = live.get(session.get("entry_id"), 0) + 1
        self._entries = {str(e.get("id")): e for e in state.allowlist}
        rows: list[Row] = [
            (str(e.get("id")), entry_row(e, live.get(e.get("id"), 0))) for e in state.allowlist
        ]
        self.set_rows(rows)
        self._explain()

    def selected(self) -> dict[str, Any] | None:
        """The entry under the cursor."""
        key = self.cursor_key
        return None if key is None else self._entries.get(key)

    def _explain(self) -> None:
        self.detail.update(entry_detail(self.selected()))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._explain()
