"""What the dashboard may and may not pull in.

- sengd never needs Textual: every daemon module imports, and a real sengd starts and serves
  its control socket, with `textual` made unimportable (a meta path finder refuses it).
- sengadm's scripting commands do not need it either; `sengadm dashboard` then says clearly
  that it is missing (exit 2).
- The dashboard talks to the daemon only through the socket: importing it loads no daemon
  module beyond the protocol definitions, and no database library.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sengadm.client import Client
from sengd.testing.attestation_kit import TestIas
from tests.integration.netns import topology
from tests.integration.site import Site

REPO = Path(__file__).resolve().parents[2]

BLOCK_TEXTUAL = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class NoTextual(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "textual" or name.startswith("textual."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoTextual())
    """
)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


def test_the_blocker_really_blocks_textual() -> None:
    out = run_python(BLOCK_TEXTUAL + "import textual.app\n")
    assert out.returncode != 0 and "blocked by the test" in out.stderr


def test_every_daemon_module_imports_without_textual() -> None:
    code = BLOCK_TEXTUAL + textwrap.dedent(
        """
        import importlib, json, pkgutil
        import sengd
        names = []
        for info in pkgutil.walk_packages(sengd.__path__, "sengd."):
            # __main__ runs the daemon; env runs only inside alembic
            if info.name.endswith(".__main__") or info.name == "sengd.migrations.env":
                continue
            importlib.import_module(info.name)
            names.append(info.name)
        from sengadm.cli import build_parser, main
        build_parser()
        code = main(["--socket", "/nonexistent/sengd.sock", "dashboard"])
        print(json.dumps({
            "imported": names,
            "textual": sorted(m for m in sys.modules if m.split(".")[0] == "textual"),
            "dashboard_exit": code,
        }))
        """
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["textual"] == []
    assert {"sengd.daemon", "sengd.cli", "sengd.rpc.server", "sengd.rpc.methods"} <= set(
        result["imported"]
    )
    assert len(result["imported"]) > 40
    assert result["dashboard_exit"] == 2
    assert "the dashboard needs Textual" in out.stderr


def test_the_dashboard_imports_no_daemon_module() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        import sengadm.tui.app
        print(json.dumps(sorted(m for m in sys.modules
                                if m.split(".")[0] in ("sengd", "sqlalchemy", "alembic"))))
        """
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["sengd", "sengd.rpc", "sengd.rpc.protocol"]


@pytest.mark.integration
def test_sengd_runs_without_textual(tmp_path: Path) -> None:
    with topology() as topo:
        site = Site(topo, tmp_path, TestIas.create())
        log = open(site.log_path, "a")  # noqa: SIM115 - the process owns it until it exits
        launcher = BLOCK_TEXTUAL + "import runpy\nrunpy.run_module('sengd', run_name='__main__')"
        site.process = topo.spawn(
            site.gw,
            [sys.executable, "-c", launcher, "--config", str(site.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
        )
        try:
            site.wait_log("event=started", timeout=30)
            assert site.socket_path is not None
            with Client(site.socket_path, timeout=10) as client:
                assert client.call("status")["sessions"] == 0
            site.process.send_signal(signal.SIGTERM)
            assert site.process.wait(10) == 0
        finally:
            log.close()
            if site.process.poll() is None:
                site.process.kill()
                site.process.wait(10)


def test_sengadm_without_a_terminal_prints_the_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sengadm"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 2
    assert "usage: sengadm" in out.stderr and "dashboard" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "sqlite:///x.db", "dashboard"], "--db is not supported"),
        (["dashboard", "--refresh", "0.1"], "--refresh must be 0.5 to 60 seconds"),
    ],
)
def test_dashboard_usage_errors(args: list[str], message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sengadm", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert out.returncode == 2 and message in out.stderr
