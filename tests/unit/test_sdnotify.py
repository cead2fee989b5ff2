"""sd_notify messages reach a real datagram socket; without NOTIFY_SOCKET nothing is sent."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sengd.sdnotify import Notifier


def test_messages_reach_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    notifier = Notifier(path)
    assert notifier.enabled
    notifier.notify("READY=1", "STATUS=serving")
    assert server.recv(100) == b"READY=1\nSTATUS=serving"
    notifier.close()
    server.close()


def test_abstract_socket() -> None:
    name = f"seng-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    Notifier("@" + name).notify("STOPPING=1")
    assert server.recv(100) == b"STOPPING=1"
    server.close()


def test_disabled_and_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.notify("READY=1")  # no socket: silently nothing
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notifier.watchdog_interval() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert notifier.watchdog_interval() is None
