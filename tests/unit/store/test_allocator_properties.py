"""Property-based test of the allocator on SQLite (the PostgreSQL run is an integration test)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from sqlalchemy import Engine

from .allocator_machine import AllocatorMachine


def test_allocator_matches_model_on_sqlite(engine: Engine) -> None:
    AllocatorMachine.engine = engine
    run_state_machine_as_test(
        AllocatorMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
