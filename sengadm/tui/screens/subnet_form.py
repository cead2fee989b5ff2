"""Adding an enclave subnet: a validated form that calls `subnets.add`."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Network
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from sengadm.client import Unreachable
from sengadm.tui import validate
from sengadm.tui.context import dashboard
from sengd.rpc.protocol import RpcError

FIELDS: tuple[tuple[str, str, str], ...] = (
    ("cidr", "Network", "CIDR, /8 to /30, e.g. 192.168.40.0/24"),
    ("gateway", "Gateway", "an address inside it; blank: the first one"),
    ("name", "Name", "blank: the CIDR"),
    ("description", "Description", "optional"),
)


class SubnetFormScreen(ModalScreen[bool]):
    """The form for a new enclave subnet; dismissed with True once the daemon added it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.checks: dict[str, Callable[[str], Any]] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="form"):
            yield Static(Text(" New enclave subnet ", style="bold"), classes="dialog-title")
            for key, label, hint in FIELDS:
                with Horizontal(classes="field"):
                    yield Label(label, classes="field-label")
                    yield Input(placeholder=hint, id=key, compact=True)
                yield Static(id=f"{key}-error", classes="field-error")
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Checkbox("the default subnet", False, id="default", compact=True)
            yield Static(id="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def _network(self) -> IPv4Network | None:
        try:
            return validate.subnet_network(
                self.query_one("#cidr", Input).value, dashboard(self).state.subnets
            )
        except validate.FieldError:
            return None

    def on_mount(self) -> None:
        subnets = dashboard(self).state.subnets
        self.checks = {
            "cidr": lambda t: validate.subnet_network(t, subnets),
            "gateway": lambda t: validate.gateway(t, self._network()),
            "name": lambda t: validate.subnet_name(t, subnets, self._network()),
            "description": lambda t: t.strip(),
        }
        self.query_one("#cidr", Input).focus()

    def _check(self, key: str) -> tuple[bool, Any]:
        field = self.query_one(f"#{key}", Input)
        error = self.query_one(f"#{key}-error", Static)
        try:
            value = self.checks[key](field.value)
        except validate.FieldError as exc:
            error.update(Text(f"↳ {exc}", style="red"))
            error.add_class("-shown")
            field.add_class("-invalid")
            return False, None
        error.update("")
        error.remove_class("-shown")
        field.remove_class("-invalid")
        return True, value

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in self.checks and event.value:
            self._check(event.input.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    async def action_save(self) -> None:
        app = dashboard(self)
        if not app.require_admin():
            return
        values: dict[str, Any] = {}
        bad: str | None = None
        for key, _, _ in FIELDS:
            ok, value = self._check(key)
            values[key] = value
            if not ok and bad is None:
                bad = key
        if bad is not None:
            self.query_one(f"#{bad}", Input).focus()
            self._form_error("Fix the marked fields first.")
            return
        params: dict[str, Any] = {"cidr": str(values["cidr"])}
        if values["gateway"] is not None:
            params["gateway"] = str(values["gateway"])
        if values["name"]:
            params["name"] = values["name"]
        if values["description"]:
            params["description"] = values["description"]
        if self.query_one("#default", Checkbox).value:
            params["default"] = True
        try:
            await app.call("subnets.add", params)
        except RpcError as exc:
            self._form_error(f"The daemon refused: {exc.message}")
            return
        except Unreachable as exc:
            self._form_error(f"Not saved: {exc}")
            return
        app.notify(f"Subnet {params['cidr']} added.")
        await app.load_store()
        self.dismiss(True)

    def _form_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(Text(message, style="bold red"))

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            await self.action_save()
        else:
            self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
