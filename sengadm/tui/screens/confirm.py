"""A yes/no question before a change that closes sessions or deletes something."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

SHOWN_SESSIONS = 50


def sessions_text(sessions: Sequence[dict[str, Any]]) -> Text:
    """The sessions a change will close, one a line (at most `SHOWN_SESSIONS`)."""
    if not sessions:
        return Text("No live session is affected.", style="green")
    text = Text(f"It will close {len(sessions)} live session(s):\n", style="bold red")
    ordered = sorted(sessions, key=lambda s: str(s.get("enclave_ip")))
    for s in ordered[:SHOWN_SESSIONS]:
        text.append(f"  {s.get('enclave_ip')}  {s.get('app') or '-'}  from {s.get('host')}\n")
    if len(ordered) > SHOWN_SESSIONS:
        text.append(f"  … and {len(ordered) - SHOWN_SESSIONS} more\n")
    return text


class ConfirmScreen(ModalScreen[bool]):
    """`question` with an explanation and the affected sessions; dismissed with True (yes) or
    False. The safe answer has the focus: Enter alone changes nothing."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(
        self,
        question: str,
        explanation: str,
        sessions: Sequence[dict[str, Any]] | None = None,
        yes: str = "Yes",
    ) -> None:
        super().__init__()
        self.question = question
        self.explanation = explanation
        self.sessions = sessions
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(f" {self.question} ", style="bold"), classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(Text(self.explanation), classes="dialog-text")
                if self.sessions is not None:
                    yield Static(sessions_text(self.sessions), id="affected")
            with Horizontal(classes="buttons"):
                yield Button(f"{self.yes} (y)", id="yes", variant="error")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
