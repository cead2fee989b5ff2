"""`sengadm db upgrade | status | import-legacy` on real SQLite files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sengadm.cli import main
from sengd.store.db import head_revision

from .legacy_fixtures import build_sqlite, netfilter_demo_db, vanilla_demo_db


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_status_then_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "seng.db")
    code, out, _ = run(capsys, "db", "status", "--db", db, "--json")
    assert code == 1
    assert json.loads(out) == {
        "database": f"sqlite:///{db}",
        "current": None,
        "head": head_revision(),
        "state": "empty",
    }
    code, out, _ = run(capsys, "db", "upgrade", "--db", db)
    assert code == 0
    assert f"upgraded from an empty database to revision {head_revision()}" in out
    code, out, _ = run(capsys, "db", "upgrade", "--db", f"sqlite:///{db}")
    assert (code, "already at revision") == (0, out.split(": ", 1)[1][:19])
    code, out, _ = run(capsys, "db", "status", "--db", db)
    assert code == 0
    assert "state:    current (up to date)" in out


def test_import_legacy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "seng.db")
    vanilla = vanilla_demo_db(tmp_path)
    code, out, _ = run(capsys, "db", "import-legacy", str(vanilla), "--db", db, "--dry-run")
    assert code == 0
    assert "would change:" in out
    assert "dry run, nothing changed" in out
    code, out, _ = run(capsys, "db", "status", "--db", db, "--json")
    assert json.loads(out)["state"] == "empty"  # the dry run did not even create the schema

    code, out, _ = run(capsys, "db", "import-legacy", str(vanilla), "--db", db)
    assert code == 0
    assert "create enclave subnet 172.16.28.0/26 gw 172.16.28.1" in out
    code, out, _ = run(capsys, "db", "import-legacy", str(vanilla), "--db", db, "--json")
    report = json.loads(out)
    assert (code, report["changed"], report["conflicts"]) == (0, False, [])

    code, out, _ = run(
        capsys, "db", "import-legacy", str(netfilter_demo_db(tmp_path)), "--db", db, "--json"
    )
    report = json.loads(out)
    assert (code, report["schema"], report["entries_created"]) == (0, "netfilter", 2)


def test_import_legacy_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "seng.db")
    other = build_sqlite(tmp_path / "other.db", "CREATE TABLE t (x INTEGER);")
    code, out, err = run(capsys, "db", "import-legacy", str(other), "--db", db)
    assert code == 2
    assert out == ""
    assert "neither the vanilla SENG schema" in err
    code, _, err = run(capsys, "db", "import-legacy", str(tmp_path / "nope.db"), "--db", db)
    assert code == 2
    assert "cannot read" in err


def test_import_with_conflicts_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "seng.db")
    bad = build_sqlite(
        tmp_path / "bad.db",
        "CREATE TABLE apps (id INTEGER PRIMARY KEY, name TEXT, mr_enclave BLOB, mr_signer BLOB);"
        "CREATE TABLE categories (id INTEGER, name TEXT, apps_id INTEGER);"
        "INSERT INTO apps VALUES (1, 'short', X'01', X'02');",
    )
    code, out, _ = run(capsys, "db", "import-legacy", str(bad), "--db", db)
    assert code == 1
    assert "conflicts (not imported):" in out
    assert "apps id 1: MRENCLAVE is 1-byte BLOB, not a 32-byte hash" in out


def test_unreachable_or_bad_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Port 9 on loopback: nothing listens there, the connection is refused at once.
    code, _, err = run(capsys, "db", "status", "--db", "postgresql://nobody@127.0.0.1:9/x")
    assert code == 2
    assert "127.0.0.1:9" in err
    code, _, err = run(capsys, "db", "status", "--db", "oracle://x")
    assert code == 2
    assert "unsupported database" in err
    (tmp_path / "file").write_text("")  # a file where the database's directory should be
    code, _, err = run(capsys, "db", "upgrade", "--db", str(tmp_path / "file" / "x.db"))
    assert code == 2
    assert "cannot use database" in err


def test_db_without_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "db")
    assert code == 2
    assert "import-legacy" in err


def test_sengadm_db_runs_as_a_program(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sengadm", "db", "upgrade", "--db", str(tmp_path / "p.db")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "upgraded from an empty database" in out.stdout
