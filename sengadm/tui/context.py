"""The dashboard app as seen from its widgets and screens (typed access to its state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.dom import DOMNode

if TYPE_CHECKING:
    from sengadm.tui.app import SengDashboard


def dashboard(node: DOMNode) -> SengDashboard:
    """The `SengDashboard` that `node` belongs to."""
    from sengadm.tui.app import SengDashboard

    app = node.app
    if not isinstance(app, SengDashboard):  # pragma: no cover - widgets only live in it
        raise TypeError(f"{type(node).__name__} runs outside the dashboard")
    return app
