"""Fixtures of the dashboard tests: a live site with a real sengd, and Pilot helpers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from textual.app import App, ScreenStackError
from textual.pilot import Pilot


async def wait_until(
    pilot: Pilot[Any],
    condition: Callable[[], bool],
    timeout: float = 5.0,
    what: str = "condition",
) -> float:
    """Let the app run until `condition()` holds; the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while not _holds(condition):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await pilot.pause(0.02)
    return time.monotonic() - started


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except ScreenStackError:  # between two screens while a mode switches
        return False


def screen_text(app: App[Any]) -> str:
    """What the terminal shows now, as plain text (the same rendering as a screenshot)."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system=None,
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()
