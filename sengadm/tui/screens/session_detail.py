"""One session in full: addresses, traffic and the complete verified evidence."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from sengadm.tui import reasons
from sengadm.tui.context import dashboard
from sengadm.tui.format import clock_time, duration, human_bytes, human_rate, parse_time, since
from sengadm.tui.messages import KillSession, StateChanged


def _yes_no(value: Any) -> str:
    return "yes" if value else "no"


def evidence_rows(session: dict[str, Any], now: datetime) -> list[tuple[str, str]]:
    """The session's fields as (label, value) pairs, in reading order."""
    report_at = parse_time(session.get("report_timestamp"))
    report_age = duration((now - report_at).total_seconds()) if report_at is not None else "?"
    drops = session.get("drops") or {}
    rows = [
        (
            "enclave IP",
            f"{session.get('enclave_ip')} in {session.get('subnet', '?')}, "
            f"{session.get('state', '?')}",
        ),
        (
            "app",
            f"{session.get('app') or '-'} (entry {session.get('entry_id', '-')}), categories "
            f"{', '.join(session.get('categories') or ()) or '-'}",
        ),
        ("host", f"{session.get('host')}:{session.get('host_port')}"),
        (
            "since",
            f"{clock_time(session.get('since'))} UTC ({since(session.get('since'), now)} ago)",
        ),
        (
            "rx",
            f"{human_bytes(session.get('rx_bytes', 0))} in {session.get('rx_packets', 0)} "
            f"packets, {human_rate(session.get('rx_bytes_per_s', 0))} (enclave to gateway)",
        ),
        (
            "tx",
            f"{human_bytes(session.get('tx_bytes', 0))} in {session.get('tx_packets', 0)} "
            f"packets, {human_rate(session.get('tx_bytes_per_s', 0))} (gateway to enclave)",
        ),
        ("drops", ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none"),
        (
            "evidence",
            f"{session.get('scheme', '?')}, key {session.get('key_type', '?')}, debug "
            f"{_yes_no(session.get('debug'))}",
        ),
        ("MRENCLAVE", str(session.get("mr_enclave", "?"))),
        ("MRSIGNER", str(session.get("mr_signer", "?"))),
        (
            "product id",
            f"{session.get('isv_prod_id', '?')}, SVN {session.get('isv_svn', '?')}",
        ),
        (
            "status",
            f"quote {session.get('quote_status') or '-'}, TCB {session.get('tcb_status') or '-'}",
        ),
        ("advisories", ", ".join(session.get("advisory_ids") or ()) or "none"),
        ("report", f"{session.get('report_id') or '-'}"),
        ("report time", f"{session.get('report_timestamp', '?')} ({report_age} old)"),
        ("key SHA-256", str(session.get("spki_sha256", "?"))),
    ]
    return rows


class SessionDetailScreen(ModalScreen[None]):
    """The detail of the session holding `enclave_ip`, kept up to date while open."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "dismiss", "Close"),
        Binding("k", "kill", "Kill"),
    ]

    def __init__(self, enclave_ip: str) -> None:
        super().__init__()
        self.enclave_ip = enclave_ip

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="wide"):
            yield Static(id="title", classes="dialog-title")
            with VerticalScroll():
                yield Static(id="detail")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sync()
        self.set_interval(1.0, self.sync)

    def on_state_changed(self, message: StateChanged) -> None:
        if message.parts & {"sessions", "link"}:
            self.sync()

    def sync(self) -> None:
        """Show the session as the state has it now (or how it ended)."""
        state = dashboard(self).state
        session = state.sessions.get(self.enclave_ip)
        title = Text(f" Session {self.enclave_ip} ", style="bold")
        if session is None:
            ended = state.ended.get(self.enclave_ip)
            session = ended or {"enclave_ip": self.enclave_ip}
            why = reasons.explain_end(str(ended.get("reason", ""))) if ended else "not found"
            title.append(f" closed: {why}", style="bold red")
        elif not state.connected:
            title.append(" (disconnected: values as last seen)", style="yellow")
        self.query_one("#title", Static).update(title)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold", no_wrap=True, width=11)
        grid.add_column(overflow="fold")
        for label, value in evidence_rows(session, state.clock()):
            grid.add_row(label, Text(value))
        self.query_one("#detail", Static).update(grid)

    def action_kill(self) -> None:
        if self.enclave_ip in dashboard(self).state.sessions:
            self.post_message(KillSession(self.enclave_ip))
        else:
            self.notify("That session is closed already.", severity="warning")
