"""The allowlist place: entries, their live sessions, add/edit/enable/disable/remove."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from sengadm.client import Unreachable
from sengadm.tui.context import dashboard
from sengadm.tui.screens.base import PlaceScreen
from sengadm.tui.screens.confirm import ConfirmScreen
from sengadm.tui.screens.entry_form import EntryFormScreen
from sengadm.tui.widgets.allowlist_table import AllowlistTable
from sengd.rpc.protocol import RpcError


class AllowlistScreen(PlaceScreen):
    """The entries table with the selected entry in full below it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Edit"),
        Binding("space", "toggle_enabled", "On/off"),
        Binding("delete,x", "remove", "Remove"),
    ]

    def body(self) -> ComposeResult:
        detail = Static(id="explain")
        yield AllowlistTable(detail, id="allowlist")
        yield detail

    def on_mount(self) -> None:
        self.query_one(AllowlistTable).focus()

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        self.query_one(AllowlistTable).sync()

    def _selected(self) -> dict[str, Any] | None:
        entry = self.query_one(AllowlistTable).selected()
        if entry is None:
            self.notify("No entry selected.", severity="warning")
        return entry

    def action_add(self) -> None:
        if dashboard(self).require_admin():
            self.app.push_screen(EntryFormScreen())

    def action_edit(self) -> None:
        entry = self._selected()
        if entry is not None and dashboard(self).require_admin():
            self.app.push_screen(EntryFormScreen(entry))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_edit()

    async def _change(self, method: str, entry: dict[str, Any], done: str) -> None:
        app = dashboard(self)
        try:
            result = await app.call(method, {"name": f"#{entry['id']}"})
        except (RpcError, Unreachable) as exc:
            message = exc.message if isinstance(exc, RpcError) else str(exc)
            self.notify(f"{method} refused: {message}", severity="error")
            return
        closed = result.get("closed_sessions") if isinstance(result, dict) else None
        note = f"Entry {entry['name']!r} {done}."
        if closed:
            note += f" Closed {len(closed)} session(s)."
        self.notify(note)
        await app.load_store()

    def action_toggle_enabled(self) -> None:
        entry = self._selected()
        app = dashboard(self)
        if entry is None or not app.require_admin():
            return
        if not entry.get("enabled"):
            self.run_worker(self._change("allowlist.enable", entry, "enabled"))
            return
        affected = app.state.sessions_of_entry(int(entry["id"]))
        if not affected:
            self.run_worker(self._change("allowlist.disable", entry, "disabled"))
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._change("allowlist.disable", entry, "disabled"))

        self.app.push_screen(
            ConfirmScreen(
                f"Disable entry {entry['name']!r}?",
                "Its enclaves are refused until it is enabled again.",
                affected,
                yes="Disable",
            ),
            answered,
        )

    def action_remove(self) -> None:
        entry = self._selected()
        app = dashboard(self)
        if entry is None or not app.require_admin():
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._change("allowlist.remove", entry, "removed"))

        self.app.push_screen(
            ConfirmScreen(
                f"Remove entry {entry['name']!r}?",
                "The entry is deleted (the audit log keeps it). Its enclaves are refused "
                "from now on.",
                app.state.sessions_of_entry(int(entry["id"])),
                yes="Remove",
            ),
            answered,
        )
