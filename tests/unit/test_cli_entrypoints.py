"""The two programs start, report their version and document their exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sengd import __version__


@pytest.mark.parametrize("module", ["sengd", "sengadm"])
def test_version(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"{module} {__version__}"


def test_sengadm_help_documents_exit_codes() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sengadm", "--help"], capture_output=True, text=True, check=True
    )
    assert "exit status:" in out.stdout
    assert "3  the daemon's control socket could not be reached" in out.stdout
