"""Shared pytest fixtures: the read-only shared test data, a test IAS, test sites."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sengd.testing.attestation_kit import TestIas
    from tests.integration.site import Site

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The real attestation samples in ../shared/testdata (must exist: CI places it there)."""
    if not TESTDATA.is_dir():
        raise RuntimeError(f"shared test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def ias() -> TestIas:
    """A test IAS (report-signing CA and signer) for the whole session: RSA keys are slow."""
    from sengd.testing.attestation_kit import TestIas

    return TestIas.create()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A directory other users can traverse (unlike pytest's tmp_path), e.g. for a socket."""
    path = Path(f"/run/seng-test-{os.getpid()}-{secrets.token_hex(2)}")
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site(ias: TestIas, tmp_path: Path, run_dir: Path) -> Iterator[Site]:
    """A test site in namespaces (enclave host, gateway with a configured, not yet started
    sengd, upstream host); sengd is killed and everything removed afterwards."""
    from tests.integration.netns import topology
    from tests.integration.site import Site

    with topology() as topo:
        s = Site(topo, tmp_path, ias, socket_path=run_dir / "sengd.sock")
        try:
            yield s
        finally:
            if s.process is not None and s.process.poll() is None:
                s.process.send_signal(signal.SIGKILL)
                s.process.wait(10)
