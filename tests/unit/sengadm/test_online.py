"""The online backend: sengadm's store commands through a real control socket.

A real `sengd.rpc.server.RpcServer` in its own event loop (a thread here) serves
`STORE_METHODS` as the daemon does (one transaction per call, the peer's uid and user name as
the audit actor). The daemon's live effects (closing sessions) are tested with a live sengd in
tests/integration; these tests pin that the commands give the same results and exit codes
through the socket as offline, and what the socket adds: the caller's identity from the kernel.
"""

from __future__ import annotations

import json
import os
import pwd
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sengd.dataplane.loop import EventLoop
from sengd.rpc.protocol import Params
from sengd.rpc.server import Caller, Method, RpcServer
from sengd.store.admin import STORE_METHODS, StoreMethod
from sengd.store.audit import Actor
from sengd.store.db import create_store_engine, migrate

from .conftest import Sengadm

H1 = "11" * 32


def _serve(engine: Engine, method: StoreMethod) -> Any:
    def handle(params: Params, caller: Caller) -> Any:
        with Session(engine) as session, session.begin():
            return method.handler(session, Actor(caller.uid, caller.name), params)

    return handle


@pytest.fixture
def daemon(tmp_path: Path, db: Path) -> Iterator[Path]:
    """A control socket serving the store methods on `db`; stopped and removed after."""
    if os.geteuid() != 0:
        raise RuntimeError("these tests connect as root (admin role); run them as root")
    engine = create_store_engine(f"sqlite:///{db}")
    migrate(engine)
    methods = {
        name: Method(m.role, _serve(engine, m), m.summary) for name, m in STORE_METHODS.items()
    }
    loop = EventLoop()
    path = tmp_path / "run" / "sengd.sock"
    server = RpcServer(
        loop, path, methods, admin_group="seng-test-no-such-group", monitor_group="seng-test-none"
    )
    server.open()
    stop = threading.Event()

    def tick() -> None:
        if stop.is_set():
            loop.stop()
        else:
            loop.call_later(0.02, tick)

    loop.call_later(0.02, tick)
    thread = threading.Thread(target=loop.run, name="rpc-loop")
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(timeout=10)
        server.close()
        loop.close()
        engine.dispose()


def test_commands_through_the_socket(sengadm: Sengadm, daemon: Path) -> None:
    def online(*argv: str) -> Any:
        return sengadm(*argv, offline=False, socket=daemon)

    added = online("enclave", "add", "nginx", "--mrenclave", H1, "--host-subnet", "0.0.0.0/0")
    assert added.code == 0, added.err
    assert (
        added.out.splitlines()[0]
        == "+ subnet default: 192.168.28.0/24 gateway 192.168.28.1, default"
    )
    assert [e["name"] for e in json.loads(online("enclave", "list", "--json").out)] == ["nginx"]
    assert online("subnet", "add", "10.77.0.0/24", "--name", "backend").code == 0
    assert online("subnet", "list").out.splitlines()[1].split()[0] == "default"

    # Errors keep their exit codes: not found 1, conflict 1, bad parameters 2.
    missing = online("enclave", "show", "nope")
    assert (missing.code, missing.err) == (1, "sengadm: no allowlist entry named 'nope'\n")
    assert online("subnet", "add", "10.77.0.0/16").code == 1
    assert (
        online("enclave", "add", "x", "--mrenclave", "12", "--host-subnet", "0.0.0.0/0").code == 2
    )

    # Offline mode on the same database sees the same state, and the same answers.
    assert json.loads(sengadm("enclave", "show", "nginx", "--json").out) == json.loads(
        online("enclave", "show", "nginx", "--json").out
    )

    # The audit actor comes from the kernel's peer credentials.
    assert online("enclave", "disable", "nginx").code == 0
    event = json.loads(online("audit", "--limit", "1", "--json").out)[0]
    assert (event["action"], event["actor_uid"]) == ("disable", os.getuid())
    assert event["actor_name"] == pwd.getpwuid(os.getuid()).pw_name


def test_apply_through_the_socket_is_idempotent(
    sengadm: Sengadm, daemon: Path, tmp_path: Path
) -> None:
    path = tmp_path / "a.toml"
    path.write_text(f'[[enclave]]\nname = "a"\nmr_enclave = "{H1}"\nhost_subnets = ["0.0.0.0/0"]\n')
    first = sengadm("apply", str(path), offline=False, socket=daemon)
    assert first.code == 0 and first.out.endswith("2 created (0 unchanged)\n")
    again = sengadm("apply", str(path), offline=False, socket=daemon)
    assert again.out.startswith("nothing to change")
    bad = tmp_path / "b.toml"
    bad.write_text('[[enclave]]\nname = "b"\n')
    refused = sengadm("apply", str(bad), offline=False, socket=daemon)
    assert refused.code == 2 and "enclave[1] (b)" in refused.err


def test_a_daemon_that_went_away_is_unreachable(sengadm: Sengadm, tmp_path: Path) -> None:
    run = sengadm("subnet", "list", offline=False, socket=tmp_path / "gone.sock")
    assert run.code == 3 and "daemon unreachable" in run.err
