"""The gateway header: who, where, how long, how busy, and a throughput sparkline.

Three lines: the gateway (id, listen address, uptime, mode, who we are) with the connection
state at the right; the figures (sessions, handshakes and denials in the last minute,
throughput each way: rx is enclaves -> gateway, tx gateway -> enclaves); the sparkline of the
total throughput, one bar per second. When the daemon is gone the right side says so and
counts down to the next attempt.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from sengadm.tui.context import dashboard
from sengadm.tui.format import duration, human_rate
from sengadm.tui.state import GatewayState


def gateway_line(state: GatewayState) -> Text:
    """Line 1, left: the gateway and who we are."""
    hello, status = state.hello, state.status
    text = Text(" ")
    text.append(str(hello.get("gateway") or status.get("gateway") or "sengd"), style="bold")
    if status.get("listen"):
        text.append(f"  {status['listen']}")
    uptime = state.uptime_s()
    if uptime is not None:
        text.append(f"  up {duration(uptime)}")
    if status.get("mode") == "allow-any-attested":
        text.append("  ANY ATTESTED", style="bold yellow")
    if hello.get("user"):
        text.append(f"  {hello['user']} ({hello.get('role', '?')})", style="dim")
    return text


def link_line(state: GatewayState) -> Text:
    """Line 1, right: the connection state."""
    link = state.link
    if link.state == "connected":
        return Text("● connected ", style="green")
    if link.state == "connecting":
        return Text("○ connecting… ", style="yellow")
    if link.state == "refused":
        return Text("✖ refused ", style="bold red")
    wait = ""
    if link.retry_at is not None:
        left = (link.retry_at - state.clock()).total_seconds()
        wait = f" in {max(left, 0):.0f}s" if left > 0.5 else " now"
    return Text(f"✖ disconnected, retrying{wait} ", style="bold red")


def figures_line(state: GatewayState) -> Text:
    """Line 2: sessions, handshakes and denials per minute, throughput each way."""
    if not state.connected:
        reason = state.link.reason or "waiting for the daemon"
        return Text(f" {reason}", style="red", no_wrap=True, overflow="ellipsis")
    stats = state.stats or {}
    total = stats.get("sessions", state.status.get("sessions", len(state.sessions)))
    active = stats.get("active_sessions", state.status.get("active_sessions", total))
    text = Text(" sessions ")
    text.append(str(total), style="bold")
    if active != total:
        text.append(f" ({active} up)")
    hs, dn = state.handshakes_per_minute(), state.denials_per_minute()
    text.append("  handshakes ")
    text.append("-" if hs is None else f"{hs:.0f}", style="bold")
    text.append("/min  denials ")
    text.append("-" if dn is None else f"{dn:.0f}", style="bold red" if dn else "bold")
    text.append("/min  rx ")
    text.append(human_rate(float(stats.get("rx_bytes_per_s", 0) or 0)), style="bold")
    text.append("  tx ")
    text.append(human_rate(float(stats.get("tx_bytes_per_s", 0) or 0)), style="bold")
    return text


class GatewayHeader(Vertical):
    """The header of every place (see the module doc)."""

    DEFAULT_CSS = """
    GatewayHeader { height: 3; background: $panel; }
    GatewayHeader Horizontal { height: 1; }
    GatewayHeader #gateway { width: 1fr; }
    GatewayHeader #link { width: auto; }
    GatewayHeader #figures { height: 1; }
    GatewayHeader Sparkline { height: 1; width: 1fr; margin: 0 1; }
    GatewayHeader .-disconnected Sparkline { opacity: 0.4; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static(id="gateway")
            yield Static(id="link")
        yield Static(id="figures")
        yield Sparkline([], id="throughput")

    def on_mount(self) -> None:
        self.sync()
        self.set_interval(1.0, self.sync)

    def sync(self) -> None:
        """Show the state as it is now."""
        state = dashboard(self).state
        self.query_one("#gateway", Static).update(gateway_line(state))
        self.query_one("#link", Static).update(link_line(state))
        self.query_one("#figures", Static).update(figures_line(state))
        spark = self.query_one(Sparkline)
        data = [rx + tx for rx, tx in zip(state.rx_history, state.tx_history, strict=True)]
        if data != list(spark.data or []):
            spark.data = data
        self.set_class(not state.connected, "-disconnected")
