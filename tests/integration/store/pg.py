"""A private PostgreSQL server for the test session, and fresh databases on it.

The server lives in a new temporary directory, owned by the `postgres` OS user (initdb refuses
to run as root), listens on 127.0.0.1 on a free port and on a unix socket in its own
directory, and is stopped and deleted at the end even when tests fail. A session killed too
hard to clean up (SIGKILL, SIGABRT) leaves its server behind; the next session stops and
deletes it (the directory records the owning process id). Missing PostgreSQL
binaries are an error, never a skip: scripts/bootstrap.sh installs Debian's `postgresql`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
DIR_PREFIX = "seng-pg-"
OWNER_FILE = "owner.pid"


def find_pg_bindir() -> Path:
    """The bin directory of the newest installed PostgreSQL; raise if there is none."""
    candidates = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file() and (p / "pg_ctl").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL server binaries not found under {PG_ROOT}: install Debian's "
            "`postgresql` package (scripts/bootstrap.sh does)"
        )
    return candidates[-1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres(argv: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", OS_USER, "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True)


@dataclass
class PostgresServer:
    """A running private server; `url(db)` gives a SQLAlchemy URL for one of its databases."""

    root: Path
    port: int
    bindir: Path

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{OS_USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=OS_USER, dbname="postgres", autocommit=True
        )

    def create_database(self) -> str:
        """Create a database with a unique name and return that name."""
        name = f"seng_test_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop `name`, disconnecting whoever is still connected to it."""
        with self._admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _stop(bindir: Path, data: Path) -> None:
    subprocess.run(
        [
            *(["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []),
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-m",
            "immediate",
            "-w",
            "stop",
        ],
        check=False,
        capture_output=True,
    )


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    # A killed process whose parent has not reaped it yet is a zombie: dead for our purpose.
    return "\nState:\tZ" not in status


def reap_orphans(bindir: Path) -> None:
    """Stop and delete servers left by test sessions that were killed before their cleanup.

    Only directories whose recorded owner process no longer exists are touched, so servers of
    test sessions running concurrently are left alone.
    """
    for root in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            _stop(bindir, root / "data")
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """Start a throw-away PostgreSQL server; stop and delete it on exit, whatever happened."""
    bindir = find_pg_bindir()
    reap_orphans(bindir)
    try:
        pw = pwd.getpwnam(OS_USER)
    except KeyError as exc:
        raise RuntimeError(f"OS user {OS_USER!r} missing: is `postgresql` installed?") from exc
    root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX))
    (root / OWNER_FILE).write_text(str(os.getpid()))
    started = False
    data = root / "data"
    try:
        (root / "sock").mkdir()
        if os.geteuid() == 0:
            os.chown(root, pw.pw_uid, pw.pw_gid)
            os.chown(root / "sock", pw.pw_uid, pw.pw_gid)
        _as_postgres(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                OS_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        last_error: subprocess.CalledProcessError | None = None
        for _attempt in range(5):  # the free port may be taken between probe and bind
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root / 'sock'} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=100"
            )
            try:
                _as_postgres(
                    [
                        str(bindir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-l",
                        str(root / "server.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                )
            except subprocess.CalledProcessError as exc:
                last_error = exc
                continue
            started = True
            break
        if not started:
            log = (root / "server.log").read_text(errors="replace") if root.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{log}")
        yield PostgresServer(root=root, port=port, bindir=bindir)
    finally:
        if started:
            _stop(bindir, data)
        shutil.rmtree(root, ignore_errors=True)
