"""Fixtures of the sengadm command tests: a database file and a way to run `sengadm`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sengadm.cli import main


@dataclass(frozen=True)
class Run:
    """The outcome of one `sengadm` run."""

    code: int
    out: str
    err: str


Sengadm = Callable[..., Run]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Where the test's SQLite database lives (created by the first command)."""
    return tmp_path / "seng.db"


@pytest.fixture
def sengadm(capsys: pytest.CaptureFixture[str], db: Path, tmp_path: Path) -> Sengadm:
    """Run `sengadm --socket <none> --db <db> ARGS...` in-process; returns code and output.

    `offline=False` leaves out `--db` (the daemon at `socket`, default: a path where none
    listens). An argparse usage error counts as its exit status.
    """

    def run(*argv: str, offline: bool = True, socket: Path | None = None) -> Run:
        capsys.readouterr()
        options = ["--socket", str(socket or tmp_path / "no-daemon.sock")]
        if offline:
            options += ["--db", str(db)]
        try:
            code = main([*options, *argv])
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
