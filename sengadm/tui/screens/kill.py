"""Closing a session: confirm, with a reason that goes into the daemon's log and audit."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DEFAULT_REASON = "closed from the sengadm dashboard"


class KillScreen(ModalScreen[str | None]):
    """Ask whether to close `session` and why; dismissed with the reason, or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, session: dict[str, Any]) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        s = self.session
        with Vertical(id="dialog"):
            yield Static(
                Text(f" Close session {s.get('enclave_ip')}? ", style="bold"),
                classes="dialog-title",
            )
            yield Static(
                Text(
                    f"{s.get('app') or '-'} from {s.get('host')}:{s.get('host_port')}, "
                    f"MRENCLAVE {str(s.get('mr_enclave', ''))[:16]}…\n"
                    "Both tunnels get close_notify and the address is released. The enclave "
                    "may connect again unless its allowlist entry is disabled."
                ),
                classes="dialog-text",
            )
            yield Label("Reason (logged and audited):")
            yield Input(DEFAULT_REASON, id="reason", max_length=500)
            with Horizontal(classes="buttons"):
                yield Button("Kill session", id="confirm", variant="error")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "confirm":
            self._confirm()
        else:
            self.dismiss(None)

    def _confirm(self) -> None:
        reason = self.query_one("#reason", Input).value.strip() or DEFAULT_REASON
        self.dismiss(reason)

    def action_cancel(self) -> None:
        self.dismiss(None)
