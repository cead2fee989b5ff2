"""The control socket against a live sengd: methods, authorization by real Unix users, and
hostile clients (malformed, oversized, slow, vanishing) that must not disturb anything."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sengadm.client import Client
from sengd.rpc.protocol import INVALID_PARAMS, METHOD_NOT_FOUND, NOT_FOUND, RpcError
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EmulatorError
from tests.integration.netns import topology
from tests.integration.site import Site

pytestmark = pytest.mark.integration

MR_A = bytes.fromhex("a1" * 32)
REPO = Path(__file__).resolve().parents[2]


def client(site: Site) -> Client:
    assert site.socket_path is not None
    return Client(site.socket_path, timeout=10)


def sengadm(site: Site, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run sengadm (as root in a subprocess, or as `user` in a forked child that dropped to
    that user's uid, gid and groups: the interpreter of this venv may not be readable by
    other users, the kernel's credentials are what matters)."""
    argv = ["--socket", str(site.socket_path), *args]
    if user is None:
        return subprocess.run(
            [sys.executable, "-m", "sengadm", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=REPO,
        )
    return run_as(user, argv)


def run_as(user: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    import pwd

    from sengadm.cli import build_parser, main

    build_parser()  # import every command module now: after setuid the stdlib of this
    # interpreter (under /root here) may not be readable any more
    entry = pwd.getpwnam(user)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become the user, run sengadm, never return
        code = 70
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - pytest replaced them
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            os.setgroups(os.getgrouplist(user, entry.pw_gid))
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            code = main(argv)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(status), stdout, stderr)


def test_live_methods_and_sengadm(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(emu)
    assert site.ping_upstream(emu)
    with client(site) as c:
        hello = c.call("rpc.hello")
        assert hello["protocol"] == 1 and hello["role"] == "admin" and hello["user"] == "root"
        names = {m["method"] for m in c.call("rpc.methods")}
        assert {"status", "sessions.list", "sessions.kill", "config.reload"} <= names
        status = c.call("status")
        assert status["sessions"] == 1 and status["active_sessions"] == 1
        assert status["rx_packets"] >= 1 and status["tx_packets"] >= 1
        sessions = c.call("sessions.list")
        assert [s["enclave_ip"] for s in sessions] == ["192.168.28.2"]
        one = c.call("sessions.get", {"enclave_ip": "192.168.28.2"})
        assert one["app"] == "demo" and one["mr_enclave"] == MR_A.hex()
        assert one["key_type"] == "ec-p384" and one["quote_status"] == "OK"
        with pytest.raises(RpcError) as err:
            c.call("sessions.get", {"enclave_ip": "192.168.28.77"})
        assert err.value.code == NOT_FOUND
        assert c.call("denials.recent") == []
        reload = c.call("config.reload")
        assert reload["closed_sessions"] == [] and reload["restart_needed"] == []
    out = sengadm(site, "session", "list", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["enclave_ip"] == "192.168.28.2"
    text = sengadm(site, "status")
    assert text.returncode == 0 and "sessions     1 (1 active" in text.stdout
    kill = sengadm(site, "session", "kill", "192.168.28.2", "--reason", "test kill")
    assert kill.returncode == 0, kill.stderr
    site.wait_log("reason=killed")
    assert "actor=root" in site.log_text() and 'detail="test kill"' in site.log_text()
    assert sengadm(site, "session", "kill", "192.168.28.2").returncode == 1
    assert site.open_leases() == []
    engine_rows = site.audit_actions()
    assert ("kill", "root") in engine_rows


def test_events_stream_sessions_denials_and_stats(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()
    with client(site) as c:
        stream = c.events()
        emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
        site.connect(emu)
        stranger = site.emulator(mint_ratls_certificate(ias, mr_enclave=bytes(32)), timeout=3)
        with pytest.raises(Exception):  # noqa: B017 - refused by the gateway
            site.connect(stranger)
        emu.close()
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 10
        for event in stream:
            seen.setdefault(event["event"], event)
            if {"session.up", "session.down", "denial", "stats"} <= set(seen):
                break
            assert time.monotonic() < deadline, seen
    assert seen["session.up"]["enclave_ip"] == "192.168.28.2"
    assert seen["session.down"]["reason"] == "close-notify"
    assert seen["denial"]["reason"] == "not-allowlisted"
    assert "rx_bytes_per_s" in seen["stats"]


def raw_exchange(site: Site, payload: bytes, read: bool = True) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(site.socket_path))
    sock.sendall(payload)
    data = b""
    if read:
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    sock.close()
    return data


def test_hostile_clients_get_clear_errors_and_change_nothing(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(emu)
    answers = {
        "malformed": raw_exchange(site, b"{not json\n"),
        "array": raw_exchange(site, b"[1,2]\n"),
        "version": raw_exchange(site, b'{"jsonrpc":"1.0","id":1,"method":"status"}\n'),
        "unknown": raw_exchange(site, b'{"jsonrpc":"2.0","id":2,"method":"nope"}\n'),
        "wrong type": raw_exchange(
            site,
            b'{"jsonrpc":"2.0","id":3,"method":"denials.recent","params":{"limit":"x"}}\n',
        ),
        "unknown param": raw_exchange(
            site, b'{"jsonrpc":"2.0","id":4,"method":"status","params":{"x":1}}\n'
        ),
        "oversized": raw_exchange(
            site, b'{"jsonrpc":"2.0","id":5,"method":"' + b"a" * (1024 * 1024 + 16)
        ),
    }
    codes = {k: json.loads(v)["error"]["code"] for k, v in answers.items()}
    assert codes == {
        "malformed": -32700,
        "array": -32600,
        "version": -32600,
        "unknown": METHOD_NOT_FOUND,
        "wrong type": INVALID_PARAMS,
        "unknown param": INVALID_PARAMS,
        "oversized": -32004,
    }
    assert json.loads(answers["unknown"])["id"] == 2
    assert "'limit' must be an integer" in json.loads(answers["wrong type"])["error"]["message"]
    # A subscriber that never reads is dropped once its backlog passes the bound; one that
    # vanishes mid-request is forgotten. Neither disturbs the daemon or the enclave.
    lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.connect(str(site.socket_path))
    lazy.sendall(b'{"jsonrpc":"2.0","id":1,"method":"events.subscribe"}\n')
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        # ~0.6 kB per answer, 7 MB in all: past the daemon's 4 MiB per-connection bound.
        for i in range(12000):
            lazy.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"rpc.methods"}\n' % (i + 2))
    raw_exchange(site, b'{"jsonrpc":"2.0","id":1,"method":"sta', read=False)
    time.sleep(1)
    with client(site) as c:
        assert c.call("status")["active_sessions"] == 1
    assert "event=rpc-client-dropped" in site.log_text()
    lazy.close()
    assert site.ping_upstream(emu)
    assert site.process is not None and site.process.poll() is None


@pytest.fixture
def unix_accounts() -> Iterator[dict[str, str]]:
    """Real groups and users for this test: an admin, a monitor and a stranger."""
    token = secrets.token_hex(3)
    groups = {"admin": f"sga{token}", "monitor": f"sgm{token}"}
    users = {"admin": f"sua{token}", "monitor": f"sum{token}", "stranger": f"sus{token}"}
    created_users: list[str] = []
    created_groups: list[str] = []
    try:
        for name in groups.values():
            subprocess.run(["groupadd", name], check=True)
            created_groups.append(name)
        for role, name in users.items():
            extra = ["-G", groups[role]] if role in groups else []
            subprocess.run(
                ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", *extra, name],
                check=True,
            )
            created_users.append(name)
        yield {**{f"{k}_user": v for k, v in users.items()}, **groups}
    finally:
        for name in created_users:
            subprocess.run(["userdel", name], check=False)
        for name in created_groups:
            subprocess.run(["groupdel", name], check=False)


def test_authorization_by_peer_credentials(
    ias: TestIas, tmp_path: Path, run_dir: Path, unix_accounts: dict[str, str]
) -> None:
    with topology() as topo:
        site = Site(
            topo,
            tmp_path,
            ias,
            socket_path=run_dir / "sengd.sock",
            admin_group=unix_accounts["admin"],
            monitor_group=unix_accounts["monitor"],
        )
        site.start()
        try:
            assert os.stat(run_dir / "sengd.sock").st_mode & 0o777 == 0o660
            acl = subprocess.run(
                ["getfacl", "-cp", str(run_dir / "sengd.sock")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert f"group:{unix_accounts['monitor']}:rw-" in acl
            admin = unix_accounts["admin_user"]
            monitor = unix_accounts["monitor_user"]
            stranger = unix_accounts["stranger_user"]
            assert sengadm(site, "status", user=admin).returncode == 0
            assert sengadm(site, "status", user=monitor).returncode == 0
            refused = sengadm(site, "reload", user=monitor)
            assert refused.returncode == 1 and "only a monitor" in refused.stderr
            assert sengadm(site, "reload", user=admin).returncode == 0
            stranger_out = sengadm(site, "status", user=stranger)
            assert stranger_out.returncode == 3 and "permission denied" in stranger_out.stderr
            assert ("reload", admin) in site.audit_actions()
        finally:
            if site.process is not None and site.process.poll() is None:
                site.stop()


def test_stranger_with_socket_access_is_refused_by_credentials(
    site: Site, unix_accounts: dict[str, str]
) -> None:
    """Even with the file permissions out of the way, the peer's uid decides."""
    site.start()
    assert site.socket_path is not None
    os.chmod(site.socket_path, 0o666)
    out = sengadm(site, "status", user=unix_accounts["stranger_user"])
    assert out.returncode == 1
    assert "not authorized" in out.stderr and unix_accounts["stranger_user"] in out.stderr
    assert "event=rpc-refused" in site.log_text()
    with client(site) as c:
        assert c.call("rpc.hello")["role"] == "admin"


def test_enclave_remove_revokes_exactly_its_sessions_within_a_second(
    site: Site, ias: TestIas
) -> None:
    """Two apps connected; `sengadm enclave remove` of one closes only its session, at once,
    and reports it; `sengadm enclave add` lets a refused enclave in without a restart."""
    mr_b = bytes.fromhex("b2" * 32)
    site.start()
    add_a = sengadm(
        site, "enclave", "add", "app-a", "--mrenclave", MR_A.hex(), "--host-subnet", "10.200.1.0/24"
    )
    assert add_a.returncode == 0, add_a.stderr
    assert (
        sengadm(
            site,
            "enclave",
            "add",
            "app-b",
            "--mrenclave",
            mr_b.hex(),
            "--host-subnet",
            "10.200.0.0/16",
        ).returncode
        == 0
    )
    a = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    b = site.emulator(mint_ratls_certificate(ias, key_type="rsa-2048", mr_enclave=mr_b))
    site.connect(a)
    site.connect(b)
    started = time.monotonic()
    out = sengadm(site, "enclave", "remove", "app-a", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [s["enclave_ip"] for s in result["closed_sessions"]] == ["192.168.28.2"]
    from sengd.testing.enclave_emu import TunnelClosed

    with pytest.raises(TunnelClosed):
        a.recv_packet(1.0)
    assert time.monotonic() - started < 2.0  # includes starting sengadm
    assert site.ping_upstream(b)
    assert [addr for addr, _ in site.open_leases()] == ["192.168.28.3"]
    assert ("delete", "root") in site.audit_actions()
    # A refused enclave gets in as soon as it is allowlisted, no restart.
    mr_c = bytes.fromhex("c3" * 32)
    c_cert = mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=mr_c)
    with pytest.raises(Exception):  # noqa: B017 - not allowlisted yet
        site.connect(site.emulator(c_cert, timeout=3))
    assert (
        sengadm(
            site,
            "enclave",
            "add",
            "app-c",
            "--mrenclave",
            mr_c.hex(),
            "--host-subnet",
            "10.200.1.0/24",
        ).returncode
        == 0
    )
    c = site.emulator(c_cert)
    site.connect(c)
    assert site.ping_upstream(c)


def test_apply_is_idempotent_and_prune_closes_sessions(site: Site, ias: TestIas) -> None:
    mr_b = bytes.fromhex("b2" * 32)
    site.start()
    policy = site.workdir / "policy.toml"
    policy.write_text(
        f"""version = 1
[[subnet]]
name = "default"
cidr = "192.168.28.0/24"
default = true
[[enclave]]
name = "app-a"
mr_enclave = "{MR_A.hex()}"
host_subnets = ["10.200.1.0/24"]
[[enclave]]
name = "app-b"
mr_enclave = "{mr_b.hex()}"
host_subnets = ["10.200.1.0/24"]
"""
    )
    first = sengadm(site, "apply", str(policy))
    assert first.returncode == 0, first.stderr
    assert "+ entry app-a" in first.stdout
    second = sengadm(site, "apply", str(policy))
    assert second.returncode == 0 and "nothing to change" in second.stdout
    a = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    b = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=mr_b))
    site.connect(a)
    site.connect(b)
    policy.write_text(policy.read_text().split('[[enclave]]\nname = "app-b"')[0])
    dry = sengadm(site, "apply", str(policy), "--prune", "--dry-run")
    assert dry.returncode == 0 and "app-b" in dry.stdout
    assert site.ping_upstream(b)  # a dry run changes nothing
    pruned = sengadm(site, "apply", str(policy), "--prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    closed = json.loads(pruned.stdout)["closed_sessions"]
    assert [s["app"] for s in closed] == ["app-b"]
    assert site.ping_upstream(a)
    assert sengadm(site, "apply", str(policy), "--prune").stdout.startswith("nothing to change")


def test_subnet_removal_in_use_needs_force(site: Site, ias: TestIas) -> None:
    site.start()
    assert (
        sengadm(
            site, "subnet", "add", "172.16.28.0/26", "--gateway", "172.16.28.1", "--name", "lab"
        ).returncode
        == 0
    )
    assert (
        sengadm(
            site,
            "enclave",
            "add",
            "lab-app",
            "--mrenclave",
            MR_A.hex(),
            "--host-subnet",
            "10.200.1.0/24=lab",
        ).returncode
        == 0
    )
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    assert str(site.connect(emu).ip) == "172.16.28.2"
    assert site.ping_upstream(emu)
    refused = sengadm(site, "subnet", "remove", "lab")
    assert refused.returncode == 1 and "force" in refused.stderr
    forced = sengadm(site, "subnet", "remove", "lab", "--force")
    assert forced.returncode == 0, forced.stderr
    from sengd.testing.enclave_emu import TunnelClosed

    with pytest.raises(TunnelClosed):
        emu.recv_packet(1.0)
    assert site.open_leases() == []
    listing = json.loads(sengadm(site, "subnet", "list", "--json").stdout)
    assert all(s["name"] != "lab" for s in listing)


def test_every_store_method_through_the_live_daemon(site: Site, ias: TestIas) -> None:
    """The allowlist/subnet/category/audit methods as the daemon serves them, with their live
    effects: disabling an entry closes its session, enabling lets it back in."""
    site.start()
    with client(site) as c:
        served = {m["method"] for m in c.call("rpc.methods")}
        from sengd.store.admin import STORE_METHODS

        assert set(STORE_METHODS) <= served
        added = c.call(
            "allowlist.add",
            {
                "name": "app-a",
                "mr_enclave": MR_A.hex(),
                "host_routes": ["10.200.1.0/24"],
                "categories": ["web"],
            },
        )
        assert added["changed"] and added["closed_sessions"] == []
        assert [e["name"] for e in c.call("allowlist.list")] == ["app-a"]
        assert c.call("allowlist.get", {"name": "app-a"})["mr_enclave"] == MR_A.hex()
        assert [cat["name"] for cat in c.call("categories.list")] == ["web"]
        subnets = c.call("subnets.list")
        assert [s["network"] for s in subnets] == ["192.168.28.0/24"]
        c.call("subnets.add", {"cidr": "172.16.28.0/26", "name": "lab"})
        c.call("subnets.set_default", {"name_or_cidr": "lab"})
        assert {s["name"]: s["default"] for s in c.call("subnets.list")}["lab"] is True
        emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
        assert str(site.connect(emu).ip) == "192.168.28.2"  # the entry's route was fixed at add
        updated = c.call("allowlist.update", {"name": "app-a", "comment": "front end"})
        assert updated["changed"] and updated["closed_sessions"] == []
        disabled = c.call("allowlist.disable", {"name": "app-a"})
        assert [s["enclave_ip"] for s in disabled["closed_sessions"]] == ["192.168.28.2"]
        refused = site.emulator(
            mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A), timeout=3
        )
        with pytest.raises(EmulatorError):
            site.connect(refused)
        assert c.call("denials.recent")[-1]["reason"] == "entry-disabled"
        c.call("allowlist.enable", {"name": "app-a"})
        again = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
        site.connect(again)
        assert site.ping_upstream(again)
        audit = c.call("audit.list", {"limit": 50})
        assert {e["actor_name"] for e in audit} == {"root"}
        assert len(audit) >= 6
        with pytest.raises(RpcError) as err:
            c.call("allowlist.get", {"name": "nope"})
        assert err.value.code == NOT_FOUND
