"""The help screen: keys of every place, what the figures mean, where to read more."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

KEYS: tuple[tuple[str, str, str], ...] = (
    ("everywhere", "1 2 3 4", "sessions, events, allowlist, subnets"),
    ("", "? / F1", "this help"),
    ("", "ctrl+r", "reload everything from the daemon"),
    ("", "q", "quit (ctrl+q also)"),
    ("", "mouse", "click rows, headers (sort), buttons and footer keys"),
    ("sessions", "enter", "details: the full verified evidence"),
    ("", "k", "kill the session (asks for a reason)"),
    ("", "/  esc", "filter by IP, app, host, MRENCLAVE…; clear"),
    ("", "s  r", "next sort column; reverse (or click a header)"),
    ("events", "/  d", "filter; denials only"),
    ("allowlist", "a  e", "add; edit (or enter)"),
    ("", "space", "enable / disable (asks when it closes sessions)"),
    ("", "x / del", "remove (shows the sessions it will close)"),
    ("subnets", "a  m", "add; make the default subnet"),
    ("", "x / del", "remove (forced when in use: routes into it go too)"),
    ("forms", "tab  ctrl+s", "next field; save (esc cancels)"),
)

FIGURES = (
    "rx is traffic from the enclaves to the gateway, tx from the gateway to the enclaves. "
    "Handshakes and denials count the last minute. Rates are over the last second; the "
    "sparkline shows the total throughput, one bar per second. A dimmed row is a session "
    "still being set up. When the daemon goes away the header says so and the dashboard "
    "reconnects by itself; what is shown meanwhile is the last known state."
)


class HelpScreen(ModalScreen[None]):
    """Keys and meanings (see the module doc)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 1))
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column()
        for place, key, what in KEYS:
            keys.add_row(place, key, what)
        with Vertical(id="dialog", classes="wide"):
            yield Static(Text(" sengadm dashboard: help ", style="bold"), classes="dialog-title")
            with VerticalScroll():
                yield Static(keys)
                yield Static(Text("\n" + FIGURES))
                yield Static(
                    Text(
                        "\nReason codes are explained in the events log; docs/dashboard.md "
                        "and docs/rpc.md describe everything shown here.",
                        style="dim",
                    )
                )
        yield Footer(compact=True)
