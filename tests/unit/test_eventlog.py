"""Event lines are logfmt: stable, parseable, safe against values that contain separators."""

from __future__ import annotations

import logging

import pytest

from sengd.eventlog import emit, format_event


def test_format_event_renders_values() -> None:
    line = format_event(
        "session-up",
        {"enclave_ip": "192.168.28.2", "app": "Demo App", "mrenclave": b"\xd0\xd8", "n": None},
    )
    assert line == 'event=session-up enclave_ip=192.168.28.2 app="Demo App" mrenclave=d0d8 n=-'


def test_values_cannot_inject_fields_or_lines() -> None:
    line = format_event("denial", {"reason": 'x" evil=1\nevent=forged'})
    assert "\n" not in line
    assert line == r'event=denial reason="x\" evil=1\nevent=forged"'


def test_emit_respects_level(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("sengd.test")
    with caplog.at_level(logging.INFO, logger="sengd.test"):
        emit(logger, logging.DEBUG, "hidden", a=1)
        emit(logger, logging.INFO, "shown", duration=1.23456)
    assert [r.getMessage() for r in caplog.records] == ["event=shown duration=1.235"]
