"""Snapshots of the dashboard's screens at 80x24 with a frozen clock (pytest-textual-snapshot).

The gateway is `ScriptedDaemon` serving `gateway_data` through a real Unix socket, so every
value on screen is fixed. The SVGs live in __snapshots__/ next to this file; after an intended
change of the look, review the new pictures and update them with
`pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from sengadm.aclient import Backoff
from sengadm.tui.app import SengDashboard
from sengadm.tui.screens.entry_form import EntryFormScreen
from tests.tui import gateway_data
from tests.tui.conftest import wait_until
from tests.tui.scripted import ScriptedDaemon

SIZE = (80, 24)
Compare = Callable[..., bool]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[ScriptedDaemon]:
    with ScriptedDaemon(tmp_path / "sengd.sock", gateway_data.answers()) as d:
        yield d


def frozen_app(daemon: ScriptedDaemon) -> SengDashboard:
    return SengDashboard(
        daemon.path,
        clock=lambda: gateway_data.NOW,
        refresh=3600,
        backoff=Backoff(30.0, 30.0),
    )


def loaded(
    daemon: ScriptedDaemon, then: Callable[[Pilot[Any]], Awaitable[None]] | None = None
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """A `run_before` that waits for the data and 90 seconds of stats, then does `then`."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, SengDashboard)
        await wait_until(pilot, lambda: app.state.subnets != [] and daemon.subscribers == 1)
        for event in gateway_data.stats_events():
            daemon.publish("stats", event)
        await wait_until(pilot, lambda: len(app.state.rx_history) == 90, what="stats")
        await pilot.pause(0.3)  # one batch of changes reaches the screen
        if then is not None:
            await then(pilot)
        await pilot.pause(0.3)

    return run_before


def press(*keys: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run(pilot: Pilot[Any]) -> None:
        await pilot.press(*keys)
        await pilot.pause(0.2)

    return run


def test_sessions(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The main screen: header with figures and sparkline, the sessions table."""
    assert snap_compare(frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon))


def test_sessions_sorted_by_rx_rate_and_filtered(
    snap_compare: Compare, daemon: ScriptedDaemon
) -> None:
    """Sorted by RX/s, highest first (two presses on s and a reverse), filtered to 'web'."""

    async def then(pilot: Pilot[Any]) -> None:
        await pilot.press("s", "s", "s", "s", "r", "slash", *"web", "enter")
        await pilot.pause(0.2)

    assert snap_compare(frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, then))


def test_session_detail(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The full evidence of one session."""
    assert snap_compare(
        frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, press("down", "enter"))
    )


def test_kill_dialog(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """Kill asks for confirmation and a reason."""
    assert snap_compare(
        frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, press("k"))
    )


def test_events(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The events log: denials with their reasons in words, the newest denial explained."""
    assert snap_compare(
        frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, press("2", "up"))
    )


def test_allowlist(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The allowlist with live sessions counted and the selected entry in full."""
    assert snap_compare(
        frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, press("3", "down"))
    )


def test_entry_form_shows_what_is_wrong(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The entry form after Save with a taken name, a short MRENCLAVE and a host route into
    an enclave subnet that does not exist."""

    async def then(pilot: Pilot[Any]) -> None:
        await pilot.press("3", "a")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, EntryFormScreen))
        form = pilot.app.screen
        form.query_one("#name", Input).value = "web"
        form.query_one("#mr_enclave", Input).value = "5f5f5f"
        form.query_one("#host_routes", Input).value = "10.0.7.0/24, 10.0.8.0/24=nowhere"
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)

    assert snap_compare(frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, then))


def test_subnets(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The enclave subnets."""
    assert snap_compare(
        frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, press("4"))
    )


def test_remove_entry_lists_the_sessions_it_closes(
    snap_compare: Compare, daemon: ScriptedDaemon
) -> None:
    """Removing 'web' asks first and names the three sessions it will close."""
    assert snap_compare(
        frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, press("3", "x"))
    )


def test_help(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The help screen."""
    assert snap_compare(
        frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, press("question_mark"))
    )


def test_disconnected(snap_compare: Compare, daemon: ScriptedDaemon) -> None:
    """The daemon went away: the header says so and when it retries; the last known
    sessions stay, dimmed."""

    async def then(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, SengDashboard)
        daemon.stop()
        await wait_until(pilot, lambda: app.state.link.state == "disconnected")
        await pilot.pause(0.3)

    assert snap_compare(frozen_app(daemon), terminal_size=SIZE, run_before=loaded(daemon, then))
