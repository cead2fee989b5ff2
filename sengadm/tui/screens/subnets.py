"""The subnets place: enclave subnets, add, mark the default, remove."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from sengadm.client import Unreachable
from sengadm.tui.context import dashboard
from sengadm.tui.screens.base import PlaceScreen
from sengadm.tui.screens.confirm import ConfirmScreen
from sengadm.tui.screens.subnet_form import SubnetFormScreen
from sengadm.tui.widgets.subnets_table import SubnetsTable
from sengd.rpc.protocol import RpcError


class SubnetsScreen(PlaceScreen):
    """The subnets table with the selected subnet in full below it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "add", "Add"),
        Binding("m", "mark_default", "Make default"),
        Binding("delete,x", "remove", "Remove"),
    ]

    def body(self) -> ComposeResult:
        detail = Static(id="explain")
        yield SubnetsTable(detail, id="subnets")
        yield detail

    def on_mount(self) -> None:
        self.query_one(SubnetsTable).focus()

    def sync(self, parts: frozenset[str]) -> None:
        super().sync(parts)
        self.query_one(SubnetsTable).sync()

    def _selected(self) -> dict[str, Any] | None:
        subnet = self.query_one(SubnetsTable).selected()
        if subnet is None:
            self.notify("No subnet selected.", severity="warning")
        return subnet

    def action_add(self) -> None:
        if dashboard(self).require_admin():
            self.app.push_screen(SubnetFormScreen())

    async def _call(self, method: str, params: dict[str, Any], done: str) -> None:
        app = dashboard(self)
        try:
            result = await app.call(method, params)
        except (RpcError, Unreachable) as exc:
            message = exc.message if isinstance(exc, RpcError) else str(exc)
            self.notify(f"{method} refused: {message}", severity="error")
            return
        closed = result.get("closed_sessions") if isinstance(result, dict) else None
        self.notify(done + (f" Closed {len(closed)} session(s)." if closed else ""))
        await app.load_store()

    def action_mark_default(self) -> None:
        subnet = self._selected()
        if subnet is not None and dashboard(self).require_admin():
            self.run_worker(
                self._call(
                    "subnets.set_default",
                    {"name_or_cidr": str(subnet["network"])},
                    f"{subnet['name']} is the default subnet.",
                )
            )

    def action_remove(self) -> None:
        subnet = self._selected()
        app = dashboard(self)
        if subnet is None or not app.require_admin():
            return
        sessions = app.state.sessions_in_subnet(str(subnet.get("network")))
        entries = list(subnet.get("entries") or ())
        in_use = bool(entries or subnet.get("open_leases") or sessions)
        explanation = "The subnet and its lease history are deleted."
        if entries:
            explanation += (
                f" The host routes of {', '.join(entries)} into it are deleted too; an entry "
                "left without routes admits nobody."
            )

        def answered(yes: bool | None) -> None:
            if yes:
                params: dict[str, Any] = {"name_or_cidr": str(subnet["network"])}
                if in_use:
                    params["force"] = True
                self.run_worker(self._call("subnets.remove", params, f"{subnet['name']} removed."))

        self.app.push_screen(
            ConfirmScreen(
                f"Remove subnet {subnet['name']} ({subnet['network']})?",
                explanation,
                sessions,
                yes="Remove",
            ),
            answered,
        )
