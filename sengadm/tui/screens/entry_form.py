"""Adding or editing an allowlist entry: a validated form that calls `allowlist.add/update`.

Every field is checked as it is typed (`sengadm.tui.validate`: hex lengths, CIDRs, subnet
names, duplicate names) and all of them again on Save; nothing is sent while one is wrong.
What the daemon still refuses (it is the authority) is shown in the form, which stays open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from sengadm.client import Unreachable
from sengadm.tui import validate
from sengadm.tui.context import dashboard
from sengadm.tui.widgets.allowlist_table import route_text
from sengd.rpc.protocol import RpcError

FIELDS: tuple[tuple[str, str, str], ...] = (
    ("name", "Name", "a unique name, e.g. web-frontend"),
    ("mr_enclave", "MRENCLAVE", "64 hex digits (or leave blank and use MRSIGNER)"),
    ("mr_signer", "MRSIGNER", "64 hex digits, with a product id"),
    ("isv_prod_id", "Product id", "0..65535 (with MRSIGNER)"),
    ("min_isv_svn", "Min SVN", "0..65535, default 0"),
    ("host_routes", "Host routes", "CIDR or CIDR=SUBNET, comma separated"),
    ("categories", "Categories", "comma separated, optional"),
    ("quote_statuses", "Quote status", "accepted statuses; blank: the defaults"),
    ("tcb_statuses", "TCB status", "accepted statuses; blank: the defaults"),
    ("denied_advisories", "Deny advisory", "e.g. INTEL-SA-00334; optional"),
    ("comment", "Comment", "optional"),
)

DEBUG_CHOICES: list[tuple[str, bool | None]] = [
    ("default policy", None),
    ("allowed", True),
    ("refused", False),
]


def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values or ())


def initial_values(entry: dict[str, Any] | None) -> dict[str, str]:
    """The form's text fields for `entry` (empty for a new one)."""
    if entry is None:
        return {key: "" for key, _, _ in FIELDS} | {"host_routes": "0.0.0.0/0"}
    return {
        "name": str(entry.get("name", "")),
        "mr_enclave": str(entry.get("mr_enclave") or ""),
        "mr_signer": str(entry.get("mr_signer") or ""),
        "isv_prod_id": "" if entry.get("isv_prod_id") is None else str(entry["isv_prod_id"]),
        "min_isv_svn": str(entry.get("min_isv_svn") or 0),
        "host_routes": _join(route_text(r) for r in entry.get("host_routes") or ()),
        "categories": _join(entry.get("categories")),
        "quote_statuses": _join(entry.get("quote_statuses")),
        "tcb_statuses": _join(entry.get("tcb_statuses")),
        "denied_advisories": _join(entry.get("denied_advisories")),
        "comment": str(entry.get("comment") or ""),
    }


class EntryFormScreen(ModalScreen[bool]):
    """The form for a new entry (`entry` None) or for changing `entry`; dismissed with True
    once the daemon accepted the change, False when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, entry: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.entry = entry
        self.checks: dict[str, Callable[[str], Any]] = {}

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        values = initial_values(self.entry)
        title = f"Edit entry {self.entry['name']!r}" if self.entry else "New allowlist entry"
        with Vertical(id="dialog", classes="wide form"):
            yield Static(Text(f" {title} ", style="bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                for key, label, hint in FIELDS:
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield Input(values[key], placeholder=hint, id=key, compact=True)
                    yield Static(id=f"{key}-error", classes="field-error")
                with Horizontal(classes="field"):
                    yield Label("Debug enclaves", classes="field-label")
                    debug = None if self.entry is None else self.entry.get("allow_debug")
                    yield Select(
                        DEBUG_CHOICES,
                        value=debug,
                        allow_blank=False,
                        id="allow_debug",
                        compact=True,
                    )
                with Horizontal(classes="field"):
                    yield Label("", classes="field-label")
                    enabled = True if self.entry is None else bool(self.entry.get("enabled"))
                    yield Checkbox("enabled", enabled, id="enabled", compact=True)
            yield Static(id="form-error")
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", id="save", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        state = dashboard(self).state
        own = None if self.entry is None else str(self.entry.get("name"))
        self.checks = {
            "name": lambda t: validate.entry_name(t, state.entry_names(), own),
            "mr_enclave": lambda t: validate.measurement(t, "MRENCLAVE"),
            "mr_signer": lambda t: validate.measurement(t, "MRSIGNER"),
            "isv_prod_id": lambda t: validate.uint16(t, "product id"),
            "min_isv_svn": lambda t: validate.uint16(t, "minimum SVN"),
            "host_routes": lambda t: validate.host_routes(t, state.subnets),
            "categories": validate.categories,
            "quote_statuses": lambda t: validate.statuses(t, "quote status"),
            "tcb_statuses": lambda t: validate.statuses(t, "TCB status"),
            "denied_advisories": validate.advisories,
            "comment": lambda t: t.strip(),
        }
        self.query_one("#name", Input).focus()

    # -- checking ------------------------------------------------------------------------------

    def _check(self, key: str) -> tuple[bool, Any]:
        """Check field `key`, show or clear its error; (ok, parsed value)."""
        text = self.query_one(f"#{key}", Input).value
        error = self.query_one(f"#{key}-error", Static)
        try:
            value = self.checks[key](text)
        except validate.FieldError as exc:
            error.update(Text(f"↳ {exc}", style="red"))
            error.add_class("-shown")
            self.query_one(f"#{key}", Input).add_class("-invalid")
            return False, None
        error.update("")
        error.remove_class("-shown")
        self.query_one(f"#{key}", Input).remove_class("-invalid")
        return True, value

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in self.checks:
            self._check(event.input.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def params(self) -> dict[str, Any] | None:
        """The request's parameters, or None (with the errors shown) if a field is wrong."""
        values: dict[str, Any] = {}
        first_bad: str | None = None
        for key, _, _ in FIELDS:
            ok, value = self._check(key)
            if not ok and first_bad is None:
                first_bad = key
            values[key] = value
        identity = values["mr_enclave"] is not None or (
            values["mr_signer"] is not None and values["isv_prod_id"] is not None
        )
        if first_bad is None and not identity:
            first_bad = "mr_enclave"
            error = self.query_one("#mr_enclave-error", Static)
            error.update(Text("↳ an MRENCLAVE, or an MRSIGNER with a product id", style="red"))
            error.add_class("-shown")
        if first_bad is not None:
            self.query_one(f"#{first_bad}", Input).focus()
            self._form_error("Fix the marked fields first.")
            return None
        params: dict[str, Any] = {
            "mr_enclave": values["mr_enclave"],
            "mr_signer": values["mr_signer"],
            "isv_prod_id": values["isv_prod_id"],
            "min_isv_svn": values["min_isv_svn"] or 0,
            "host_routes": values["host_routes"],
            "categories": values["categories"],
            "allow_debug": self.query_one("#allow_debug", Select).value,
            "quote_statuses": values["quote_statuses"],
            "tcb_statuses": values["tcb_statuses"],
            "denied_advisories": values["denied_advisories"],
            "comment": values["comment"],
            "enabled": self.query_one("#enabled", Checkbox).value,
        }
        if self.entry is None:
            params = {k: v for k, v in params.items() if v is not None}
            params["name"] = values["name"]
        else:
            params["name"] = str(self.entry["name"])
            if values["name"] != self.entry["name"]:
                params["new_name"] = values["name"]
        return params

    def _form_error(self, message: str) -> None:
        self.query_one("#form-error", Static).update(Text(message, style="bold red"))

    # -- actions -------------------------------------------------------------------------------

    async def action_save(self) -> None:
        app = dashboard(self)
        if not app.require_admin():
            return
        params = self.params()
        if params is None:
            return
        method = "allowlist.add" if self.entry is None else "allowlist.update"
        try:
            result = await app.call(method, params)
        except RpcError as exc:
            self._form_error(f"The daemon refused: {exc.message}")
            return
        except Unreachable as exc:
            self._form_error(f"Not saved: {exc}")
            return
        closed = result.get("closed_sessions") if isinstance(result, dict) else None
        name = params.get("new_name", params["name"])
        note = f"Entry {name!r} {'added' if self.entry is None else 'saved'}."
        if closed:
            note += f" Closed {len(closed)} session(s)."
        app.notify(note)
        await app.load_store()
        self.dismiss(True)

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save":
            await self.action_save()
        else:
            self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
