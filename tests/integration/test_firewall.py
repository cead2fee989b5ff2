"""Per-application firewall policy with real nftables and conntrack, sengd running in namespaces.

What issue 7 must show: rules on sengd's sets (`ip saddr @app_a tcp dport 8080 accept`, then
drop) let app A reach the upstream HTTP server and not app B; a released address leaves every
set, and an enclave of B that gets the same address inherits no conntrack state; category and
host-group sets behave the same; restart and SIGHUP leave the sets equal to the live sessions;
shutdown leaves no table. Plus the base forwarding policy, and the start-up errors.

The enclaves are in-process emulators; TCP is spoken by hand (`Tcp`) so a test can replay an
old connection's exact 4-tuple and sequence numbers from a new enclave.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from sengd.store.db import open_database, session_factory
from sengd.store.models import App, Category
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EnclaveEmulator
from tests.integration.netns import Netns, in_netns
from tests.integration.site import UP_ADDR, Site

pytestmark = pytest.mark.integration

MR_A = bytes.fromhex("a1" * 32)
MR_B = bytes.fromhex("b2" * 32)
MR_C = bytes.fromhex("c3" * 32)
HTTP_PORT = 8080
SYN, RST, PSH, ACK, FIN = 0x02, 0x04, 0x08, 0x10, 0x01

APP_RULES = """
chain admin_forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ip saddr @app_a tcp dport 8080 accept
    ip saddr @app_b icmp type echo-request accept
}
"""


def enable_firewall(site: Site, rules: str | None, extra: str = "") -> Path:
    path = site.workdir / "rules.nft"
    if rules is not None:
        path.write_text(rules)
    site.write_config(
        "[firewall]\nenabled = true\n"
        + (f'rules_file = "{path}"\n' if rules is not None else "")
        + extra
    )
    return path


def http_server(site: Site) -> subprocess.Popen[str]:
    proc = site.topo.spawn(
        site.up,
        [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", UP_ADDR],
        stderr=subprocess.PIPE,
        cwd=str(site.workdir),
    )
    deadline = time.monotonic() + 10
    while site.up.run("ss", "-Hltn", f"sport = :{HTTP_PORT}").stdout.strip() == "":
        assert time.monotonic() < deadline, "http.server did not start"
        time.sleep(0.05)
    return proc


# -- looking at the kernel ------------------------------------------------------------------


def listing(ns: Netns, table: str = "seng") -> list[dict[str, Any]] | None:
    """`nft -j list table inet TABLE` in `ns`, or None when there is no such table."""
    proc = ns.run("nft", "-j", "list", "table", "inet", table, check=False)
    if proc.returncode != 0:
        assert "No such file or directory" in proc.stderr, proc.stderr
        return None
    items: list[dict[str, Any]] = json.loads(proc.stdout)["nftables"]
    return [i for i in items if "metainfo" not in i]


def sets(ns: Netns) -> dict[str, set[str]]:
    """Every set of sengd's table with its elements (as strings)."""
    items = listing(ns)
    assert items is not None, "sengd's table is missing"
    return {
        i["set"]["name"]: {e for e in i["set"].get("elem", []) if isinstance(e, str)}
        for i in items
        if "set" in i
    }


def structure(ns: Netns) -> list[dict[str, Any]]:
    """The table without handles and set elements: what must not change across restarts."""
    items = listing(ns)
    assert items is not None
    shown = []
    for item in items:
        ((kind, body),) = item.items()
        body = {k: v for k, v in body.items() if k not in ("handle", "elem")}
        shown.append({kind: body})
    return sorted(shown, key=lambda x: json.dumps(x, sort_keys=True))


def conntrack_lines(ns: Netns, address: str) -> list[str]:
    out = ns.run("conntrack", "-L", "-f", "ipv4", check=False).stdout
    return [line for line in out.splitlines() if f"={address} " in line]


def wait_until(predicate: Any, timeout: float = 5, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- TCP by hand through the tunnel ----------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def tcp_packet(
    src: IPv4Address, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes
) -> bytes:
    dst_b = socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    pseudo = src.packed + dst_b + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src.packed, dst_b
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp


@dataclass
class Segment:
    flags: int
    seq: int
    ack: int
    data: bytes


@dataclass
class Tcp:
    """One TCP connection from an emulated enclave to the upstream HTTP server."""

    emu: EnclaveEmulator
    sport: int
    snd_nxt: int = 0
    rcv_nxt: int = 0

    @property
    def src(self) -> IPv4Address:
        assert self.emu.assignment is not None
        return self.emu.assignment.ip

    def send(self, flags: int, data: bytes = b"") -> None:
        self.emu.send_packet(
            tcp_packet(
                self.src, UP_ADDR, self.sport, HTTP_PORT, self.snd_nxt, self.rcv_nxt, flags, data
            )
        )

    def receive(self, timeout: float) -> Segment | None:
        """The next segment of this connection from the server, or None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            packet = self.emu.recv_packet(max(left, 0.01))
            if not packet or packet[9] != 6 or packet[12:16] != socket.inet_aton(UP_ADDR):
                continue
            ihl = (packet[0] & 0xF) * 4
            sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", packet, ihl)
            if sport != HTTP_PORT or dport != self.sport:
                continue
            return Segment(flags, seq, ack, packet[ihl + (off >> 4) * 4 :])
        return None

    def connect(self, timeout: float = 3) -> bool:
        """The three-way handshake; True if the server answered the SYN."""
        self.snd_nxt = random.randrange(1 << 31)
        self.send(SYN)
        self.snd_nxt += 1
        reply = self.receive(timeout)
        if reply is None or reply.flags & (SYN | ACK) != SYN | ACK:
            return False
        self.rcv_nxt = reply.seq + 1
        self.send(ACK)
        return True

    def request(self, data: bytes, timeout: float = 3) -> bytes:
        """Send `data`, return the first payload the server sends back (b"" if none)."""
        self.send(PSH | ACK, data)
        self.snd_nxt += len(data)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = self.receive(left)
            if reply is None:
                return b""
            if reply.data:
                self.rcv_nxt = reply.seq + len(reply.data)
                self.send(ACK)
                return reply.data
        return b""


GET = b"GET / HTTP/1.0\r\n\r\n"


def enclave(site: Site, ias: TestIas, mr: bytes, **kwargs: Any) -> EnclaveEmulator:
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=mr), **kwargs)
    site.connect(emu)
    return emu


def add_category(site: Site, app: str, category: str) -> None:
    engine = open_database(site.db_url)
    try:
        with session_factory(engine)() as s, s.begin():
            row = s.scalars(select(Category).where(Category.name == category)).first()
            if row is None:
                row = Category(name=category)
            for entry in s.scalars(select(App).where(App.name == app)):
                entry.categories.append(row)
    finally:
        engine.dispose()


# -- the must-shows ------------------------------------------------------------------------


def test_app_set_admits_app_a_not_app_b(site: Site, ias: TestIas) -> None:
    site.allow("A", MR_A)
    site.allow("B", MR_B)
    enable_firewall(site, APP_RULES)
    site.start()
    http_server(site)
    assert sets(site.gw) == {"app_a": set(), "app_b": set()}
    a = enclave(site, ias, MR_A)
    b = enclave(site, ias, MR_B)
    assert a.assignment is not None and b.assignment is not None
    ip_a, ip_b = str(a.assignment.ip), str(b.assignment.ip)
    site.wait_log(f"event=session-up session=2 enclave_ip={ip_b}")
    assert sets(site.gw) == {"app_a": {ip_a}, "app_b": {ip_b}}

    conn = Tcp(a, 40001)
    assert conn.connect(), "app A cannot open a connection to tcp/8080"
    assert conn.request(GET).startswith(b"HTTP/1.0 200"), "app A got no HTTP response"
    assert not Tcp(b, 40002).connect(timeout=2), "app B reached tcp/8080"
    assert site.ping_upstream(b), "app B's packets do not get through at all (broken site)"
    assert not site.ping_upstream(a, ident=2, timeout=1), "rules allow A's ping: not the rules"

    offset = len(site.log_text())
    a.close()
    site.wait_log(f"event=session-down session=1 enclave_ip={ip_a}", offset=offset)
    assert sets(site.gw) == {"app_a": set(), "app_b": {ip_b}}
    assert conntrack_lines(site.gw, ip_a) == []
    assert site.stop() == 0
    assert listing(site.gw) is None, "the table outlived sengd"


def test_reused_address_inherits_no_conntrack_state(site: Site, ias: TestIas) -> None:
    """A /30 enclave subnet has one assignable address: B gets exactly the address A had."""
    subnet = site.add_subnet("192.168.77.0/30", "tiny")
    site.allow("A", MR_A, subnet_id=subnet)
    site.allow("B", MR_B, subnet_id=subnet)
    enable_firewall(site, APP_RULES)
    site.start()
    http_server(site)
    a = enclave(site, ias, MR_A)
    assert a.assignment is not None and str(a.assignment.ip) == "192.168.77.2"
    site.wait_log("event=session-up")
    held = Tcp(a, 41000)
    assert held.connect(), "app A cannot open a connection to tcp/8080"
    assert conntrack_lines(site.gw, "192.168.77.2"), "no conntrack entry for A's connection"

    offset = len(site.log_text())
    a.close()
    site.wait_log("event=session-down session=1", offset=offset)
    assert all("192.168.77.2" not in members for members in sets(site.gw).values())
    assert conntrack_lines(site.gw, "192.168.77.2") == [], "A's conntrack entries survived"

    b = enclave(site, ias, MR_B)
    assert b.assignment is not None and str(b.assignment.ip) == "192.168.77.2"
    site.wait_log("event=session-up session=2", offset=offset)
    assert sets(site.gw) == {"app_a": set(), "app_b": {"192.168.77.2"}}
    # B continues A's connection: same 4-tuple, the next sequence numbers. With A's
    # ESTABLISHED entry still in conntrack, `ct state established accept` would let it through.
    replay = Tcp(b, held.sport, held.snd_nxt, held.rcv_nxt)
    assert replay.request(GET, timeout=2) == b"", "B used A's connection state"
    assert not Tcp(b, 41001).connect(timeout=2), "app B reached tcp/8080"
    assert site.ping_upstream(b), "app B's packets do not get through at all (broken site)"


CATEGORY_HOST_RULES = """
chain admin_forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    ip saddr @cat_server tcp dport 8080 accept
    ip saddr @host_lab icmp type echo-request accept
}
"""


def test_category_and_host_group_sets(site: Site, ias: TestIas) -> None:
    site.allow("web", MR_A, host_subnet="10.200.1.0/24")
    site.allow("tool", MR_B, host_subnet="10.200.1.0/24")
    add_category(site, "web", "Server")
    add_category(site, "tool", "Batch-Jobs")
    groups = 'host_groups = { lab = ["10.200.1.2/32"], far = ["10.99.0.0/16"] }\n'
    enable_firewall(site, CATEGORY_HOST_RULES, groups)
    site.eh.run("ip", "addr", "add", "10.200.1.3/24", "dev", _veth(site.eh))
    site.start()
    http_server(site)
    web = enclave(site, ias, MR_A)  # from host 10.200.1.2: in group lab
    tool = enclave(site, ias, MR_B, bind_address="10.200.1.3")  # not in lab
    assert web.assignment is not None and tool.assignment is not None
    ip_web, ip_tool = str(web.assignment.ip), str(tool.assignment.ip)
    site.wait_log(f"enclave_ip={ip_tool} app=tool")
    expected = {
        "app_web": {ip_web},
        "app_tool": {ip_tool},
        "cat_server": {ip_web},
        "cat_batch_jobs": {ip_tool},
        "host_lab": {ip_web},
        "host_far": set(),
    }
    assert sets(site.gw) == expected
    assert Tcp(web, 42000).connect(), "category Server cannot reach tcp/8080"
    assert not Tcp(tool, 42001).connect(timeout=2), "category Batch-Jobs reached tcp/8080"
    assert site.ping_upstream(web), "host group lab cannot ping"
    assert not site.ping_upstream(tool, timeout=1), "a host outside group lab can ping"

    # The host group now names the other host: SIGHUP moves the addresses, nothing else.
    groups = 'host_groups = { lab = ["10.200.1.3/32"], far = ["10.99.0.0/16"] }\n'
    enable_firewall(site, CATEGORY_HOST_RULES, groups)
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    site.wait_log("event=reloaded", offset=offset)
    assert sets(site.gw) == {**expected, "host_lab": {ip_tool}}
    assert site.ping_upstream(tool, ident=3), "reloaded host group lab cannot ping"
    assert not site.ping_upstream(web, ident=4, timeout=1), "the old host group still pings"

    offset = len(site.log_text())
    web.close()
    site.wait_log("event=session-down", offset=offset)
    assert sets(site.gw) == {
        **expected,
        "app_web": set(),
        "cat_server": set(),
        "host_lab": {ip_tool},
    }


def _veth(ns: Netns) -> str:
    for line in ns.run("ip", "-o", "-4", "addr", "show").stdout.splitlines():
        if "10.200.1.2/" in line:
            return line.split()[1]
    raise AssertionError("no veth with 10.200.1.2")


def test_sighup_restart_and_shutdown_keep_sets_equal_to_sessions(site: Site, ias: TestIas) -> None:
    site.allow("A", MR_A)
    site.allow("B", MR_B)
    enable_firewall(site, APP_RULES)
    site.start()
    shape = structure(site.gw)
    a = enclave(site, ias, MR_A)
    b = enclave(site, ias, MR_B)
    assert a.assignment is not None and b.assignment is not None
    ip_a, ip_b = str(a.assignment.ip), str(b.assignment.ip)
    site.wait_log(f"enclave_ip={ip_b} app=B")
    # Drift behind sengd's back, a new entry with a category, and a removed one.
    site.gw.run("nft", "add", "element", "inet", "seng", "app_b", "{ 192.168.28.250 }")
    site.gw.run("nft", "delete", "element", "inet", "seng", "app_a", f"{{ {ip_a} }}")
    site.allow("C", MR_C)
    add_category(site, "C", "New")
    site.remove_app("B")
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    site.wait_log("event=reloaded revoked=1", offset=offset)
    # B's entry is gone, but the rules still use @app_b: the set stays, empty.
    now = {"app_a": {ip_a}, "app_b": set(), "app_c": set(), "cat_new": set()}
    assert sets(site.gw) == now
    assert conntrack_lines(site.gw, ip_b) == []
    # SIGHUP again without changes: nothing moves.
    before = structure(site.gw)
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    site.wait_log("event=reloaded", offset=offset)
    assert structure(site.gw) == before
    assert sets(site.gw) == now

    # SIGKILL leaves a stale table; the restart rebuilds it from the live state (none).
    site.signal(signal.SIGKILL)
    assert site.process is not None
    site.process.wait(5)
    assert sets(site.gw)["app_a"] == {ip_a}
    site.remove_app("C")
    site.start()
    assert sets(site.gw) == {"app_a": set(), "app_b": set(), "cat_new": set()}
    assert "event=firewall-unknown-sets sets=app_b" in site.log_text()
    again = enclave(site, ias, MR_A)
    assert again.assignment is not None
    site.wait_log(f"enclave_ip={again.assignment.ip} app=A")
    assert sets(site.gw)["app_a"] == {str(again.assignment.ip)}
    assert site.stop() == 0
    assert listing(site.gw) is None, "the table outlived sengd"
    site.start()
    new_set = {"set": {"family": "inet", "name": "cat_new", "table": "seng", "type": "ipv4_addr"}}
    assert structure(site.gw) == sorted(
        [*shape, new_set], key=lambda x: json.dumps(x, sort_keys=True)
    ), "a restart did not rebuild the same table"
    assert site.stop() == 0
    assert listing(site.gw) is None


def test_rules_are_reloaded_and_a_bad_file_keeps_the_running_rules(
    site: Site, ias: TestIas
) -> None:
    site.allow("A", MR_A)
    site.allow("B", MR_B)
    path = enable_firewall(site, APP_RULES)
    site.start()
    http_server(site)
    a = enclave(site, ias, MR_A)
    b = enclave(site, ias, MR_B)
    assert b.assignment is not None
    site.wait_log(f"enclave_ip={b.assignment.ip} app=B")
    assert Tcp(a, 43000).connect() and not Tcp(b, 43001).connect(timeout=1)
    path.write_text(APP_RULES.replace("@app_a tcp", "@app_b tcp"))
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    site.wait_log("event=reloaded", offset=offset)
    assert "firewall-sync-failed" not in site.log_text(offset)
    assert Tcp(b, 43002).connect(), "the reloaded rules do not admit B"
    assert not Tcp(a, 43003).connect(timeout=1), "the old rules still admit A"
    shape = structure(site.gw)
    path.write_text(APP_RULES.replace("dport 8080", "dport eighty"))
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    text = site.wait_log("event=firewall-sync-failed", offset=offset)
    assert str(path) in text
    assert structure(site.gw) == shape, "a refused rules file changed the table"
    assert Tcp(b, 43004).connect(), "a refused rules file broke the running rules"


# -- the base policy ------------------------------------------------------------------------


def test_base_policy_forwards_and_masquerades(site: Site, ias: TestIas) -> None:
    site.allow("A", MR_A)
    uplink = _uplink(site.gw)
    enable_firewall(
        site, None, f'uplink = "{uplink}"\nmasquerade = true\nforward_policy = "drop"\n'
    )
    site.start()
    server = http_server(site)
    shape = structure(site.gw)
    chains = {x["chain"]["name"]: x["chain"] for x in shape if "chain" in x}
    assert chains["seng_forward"]["hook"] == "forward"
    assert chains["seng_postrouting"]["hook"] == "postrouting"
    a = enclave(site, ias, MR_A)
    site.wait_log("event=session-up")
    conn = Tcp(a, 44000)
    assert conn.connect() and conn.request(GET).startswith(b"HTTP/1.0 200")
    assert server.stderr is not None
    seen = _read_some(server.stderr)
    assert "10.200.2.1 - - [" in seen, f"not masqueraded behind the uplink: {seen!r}"
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    site.wait_log("event=reloaded", offset=offset)
    assert structure(site.gw) == shape, "the base policy is not converged idempotently"
    assert site.stop() == 0
    assert listing(site.gw) is None


def _uplink(gw: Netns) -> str:
    for line in gw.run("ip", "-o", "-4", "addr", "show").stdout.splitlines():
        if "10.200.2.1/" in line:
            return line.split()[1]
    raise AssertionError("no uplink")


def _read_some(stream: Any, timeout: float = 3) -> str:
    os.set_blocking(stream.fileno(), False)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline and "GET /" not in text:
        chunk = stream.read()
        if chunk:
            text += chunk
        time.sleep(0.05)
    return text


# -- start-up errors -----------------------------------------------------------------------


def test_rules_file_nft_refuses_is_a_startup_error(site: Site) -> None:
    site.allow("A", MR_A)
    path = enable_firewall(site, APP_RULES.replace("dport 8080", "dport eighty"))
    proc = site.gw.run(
        sys.executable, "-m", "sengd", "--config", str(site.config_path), check=False
    )
    assert proc.returncode == 1
    assert "[firewall] enabled" in proc.stderr and str(path) in proc.stderr, proc.stderr
    assert listing(site.gw) is None, "a failed start left its table"
    assert site.gw.run("ip", "link", "show", "tunFA", check=False).returncode != 0


def test_missing_libnftables_is_a_startup_error(site: Site) -> None:
    site.allow("A", MR_A)
    enable_firewall(site, APP_RULES)
    library = os.path.realpath("/usr/lib/x86_64-linux-gnu/libnftables.so.1")
    assert os.path.exists(library), library
    script = (
        f"mount --bind /dev/null {library} && exec {sys.executable} -m sengd --config "
        f"{site.config_path}"
    )
    proc = site.gw.run("unshare", "--mount", "sh", "-c", script, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "cannot load libnftables.so.1" in proc.stderr, proc.stderr
    assert "install the nftables package" in proc.stderr
    assert site.gw.run("ip", "link", "show", "tunFA", check=False).returncode != 0


def test_kernel_refusal_is_a_clear_error(site: Site) -> None:
    """In a user namespace without CAP_NET_ADMIN over the network namespace, the kernel
    refuses nftables and conntrack: open() says so instead of carrying on."""
    code = (
        "from sengd.config import FirewallSection\n"
        "from sengd.net import Firewall, FirewallError\n"
        "f = Firewall(FirewallSection(enabled=True), 'tunFA')\n"
        "try:\n    f.open()\nexcept FirewallError as e:\n    print('REFUSED', e)\n"
    )
    proc = site.gw.run(
        "unshare", "--user", "--map-root-user", sys.executable, "-c", code, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("REFUSED nftables unusable:"), proc.stdout + proc.stderr
    assert "Operation not permitted" in proc.stdout


# -- cost --------------------------------------------------------------------------------------


def test_session_up_and_down_cost(site: Site) -> None:
    """One session's set changes and conntrack flush, with 1000 other members present."""
    from sengd.config import FirewallSection
    from sengd.net.nft import Firewall, LiveState
    from sengd.net.sets import Member

    host = IPv4Address("10.200.1.2")
    others = tuple(
        Member(IPv4Address(f"192.168.{30 + i // 250}.{2 + i % 250}"), "bulk", ("c1",), host)
        for i in range(1000)
    )
    with in_netns(site.gw):
        fw = Firewall(FirewallSection(enabled=True, table="sengbench"), "tunFA")
        fw.open()
        try:
            fw.start(LiveState(("demo", "bulk"), ("c1", "c2"), others, ()))
            rounds = 300
            sets_time = flush_time = 0.0
            for i in range(rounds):
                member = Member(IPv4Address(f"192.168.28.{2 + i % 200}"), "demo", ("c2",), host)
                started = time.perf_counter()
                fw.add(member)
                fw.remove(member.address)
                flushed = time.perf_counter()
                fw.flush_conntrack([member.address])
                sets_time += flushed - started
                flush_time += time.perf_counter() - flushed
            assert len(fw.contents()["app_bulk"]) == 1000
        finally:
            fw.close()
    sets_ms, flush_ms = sets_time / rounds * 1000, flush_time / rounds * 1000
    print(f"per session: set elements up+down {sets_ms:.3f} ms, conntrack flush {flush_ms:.3f} ms")
    assert sets_ms < 2, f"{sets_ms:.2f} ms per session for the set elements"
    assert flush_ms < 50, f"{flush_ms:.1f} ms per conntrack flush"
    assert listing(site.gw, "sengbench") is None


@pytest.mark.parametrize("table", ["small", "large"])
def test_conntrack_flush_matches_both_directions(
    site: Site, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries whose original or reply tuple names the address go; others stay. Both ways of
    finding them: one unfiltered dump (small table), kernel-filtered dumps (large table)."""
    from sengd.net import conntrack
    from sengd.net.conntrack import Conntrack

    monkeypatch.setattr(conntrack, "SMALL_TABLE", 10**9 if table == "small" else -1)

    gw = site.gw
    common = ["-p", "tcp", "--state", "ESTABLISHED", "-t", "120"]
    gw.run("conntrack", "-I", "-s", "192.168.28.2", "-d", "10.9.0.1", *common,
           "--sport", "1000", "--dport", "80")  # fmt: skip
    gw.run("conntrack", "-I", "-s", "10.9.0.1", "-d", "192.168.28.2", *common,
           "--sport", "1001", "--dport", "22")  # fmt: skip
    # A port forward to the enclave: only the reply tuple names it.
    gw.run("conntrack", "-I", "-s", "10.9.0.7", "-d", "203.0.113.5", *common,
           "--sport", "1002", "--dport", "443", "--reply-src", "192.168.28.2",
           "--reply-dst", "10.9.0.7", "--reply-port-src", "443",
           "--reply-port-dst", "1002")  # fmt: skip
    gw.run("conntrack", "-I", "-s", "192.168.28.3", "-d", "10.9.0.1", *common,
           "--sport", "1003", "--dport", "80")  # fmt: skip
    with in_netns(gw):
        ct = Conntrack()
        try:
            assert ct.flush([IPv4Address("192.168.28.2")]) == 3
            assert ct.flush([IPv4Address("192.168.28.2")]) == 0
        finally:
            ct.close()
    left = gw.run("conntrack", "-L", "-f", "ipv4", check=False).stdout
    assert "192.168.28.2" not in left and "src=192.168.28.3" in left, left


# -- what docs/firewall.md shows -------------------------------------------------------------


def _doc_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "docs" / "firewall.md").read_text()
    return re.findall(r"```nft\n(.*?)```", text, re.S)


def test_documented_sample_rules_load_into_sengds_table(site: Site) -> None:
    """The README's four `-m seng` rules, rewritten in docs/firewall.md, load as documented."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "firewall.md").read_text()
    sample = text.split("<!-- sample-rules -->\n```nft\n", 1)[1].split("```", 1)[0]
    site.allow("DemoEnclave", MR_A)
    site.allow("SENG-NGINX", MR_B)
    add_category(site, "DemoEnclave", "Browser")
    add_category(site, "SENG-NGINX", "Server")
    enable_firewall(site, sample, 'host_groups = { internal = ["10.0.0.0/8"] }\n')
    site.start()
    assert "firewall-unknown-sets" not in site.log_text()
    assert sets(site.gw) == {
        "app_demoenclave": set(),
        "app_seng_nginx": set(),
        "cat_browser": set(),
        "cat_server": set(),
        "host_internal": set(),
    }
    chains = {x["chain"]["name"] for x in structure(site.gw) if "chain" in x}
    assert chains == {"admin_input", "admin_output", "admin_forward"}
    rules = site.gw.run("nft", "list", "table", "inet", "seng").stdout
    for reference in ("@host_internal", "@app_demoenclave", "@cat_browser", "@app_seng_nginx"):
        assert reference in rules
    assert site.stop() == 0


def test_documented_subnet_per_class_rules_load(site: Site) -> None:
    blocks = _doc_blocks()
    (per_class,) = [b for b in blocks if "table inet admin" in b]
    site.gw.run("sh", "-c", f"nft -f - <<'EOF'\n{per_class}EOF\n")
    assert listing(site.gw, "admin") is not None
