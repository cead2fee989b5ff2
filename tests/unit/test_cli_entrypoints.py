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


def test_check_config_exit_codes(tmp_path: object) -> None:
    from pathlib import Path

    from tests.conftest import REPO

    ok = subprocess.run(
        [sys.executable, "-m", "sengd", "--check-config", str(REPO / "etc" / "seng.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "is valid" in ok.stdout
    bad = Path(str(tmp_path)) / "bad.toml"
    bad.write_text("[tunnel]\nport = 40000\n")
    out = subprocess.run(
        [sys.executable, "-m", "sengd", "--config", str(bad), "--check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 3
    assert f"{bad}: tunnel.port: must be 1..32766" in out.stderr
