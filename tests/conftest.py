"""Shared pytest fixtures: where the read-only shared test data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The real attestation samples in ../shared/testdata (must exist: CI places it there)."""
    if not TESTDATA.is_dir():
        raise RuntimeError(f"shared test data not found at {TESTDATA}")
    return TESTDATA
