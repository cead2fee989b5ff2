"""sengd end to end in real namespaces: real DTLS on both ends, real TUN, real SQLite, root only.

What issue 4 must show: admission and exact IpAssignment bytes for both client builds, traffic
with real tools, 100 concurrent enclaves, denials that consume nothing and harm no one, drops of
bad input, signals (TERM, KILL + restart, HUP) and a spoofed ClientHello flood.
"""

from __future__ import annotations

import random
import signal
import socket
import struct
import sys
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sengd.testing.attestation_kit import (
    MintedCertificate,
    TestIas,
    generate_key,
    make_quote_body,
    mint_ratls_certificate,
    seng_report_data,
)
from sengd.testing.enclave_emu import EmulatorError, TunnelClosed
from tests.integration.netns import in_netns
from tests.integration.site import EH_ADDR, GW_ADDR, PORT, UP_ADDR, Site, env_with_repo

pytestmark = pytest.mark.integration

MR_A = bytes.fromhex("a1" * 32)
MR_B = bytes.fromhex("b2" * 32)
EXPECTED_FIRST_ASSIGNMENT = bytes.fromhex("08c0d1f21010ffffff0718c0d1f208")


@pytest.mark.parametrize(
    ("key_type", "fast_records"), [("rsa-2048", False), ("ec-p384", False), ("ec-p384", True)]
)
def test_enclave_gets_address_and_real_tools_work(
    site: Site, ias: TestIas, key_type: str, fast_records: bool
) -> None:
    """Both client builds: exact IpAssignment bytes, then ping, curl and iperf3 via the tunnel
    (also with the emulator's own record protection, the benchmarks' faster client)."""
    minted = mint_ratls_certificate(ias, key_type=key_type, mr_enclave=MR_A)  # type: ignore[arg-type]
    site.allow("demo", MR_A)
    site.start()
    http = site.topo.spawn(
        site.up, [sys.executable, "-m", "http.server", "8080", "--bind", UP_ADDR]
    )
    site.topo.spawn(site.up, ["iperf3", "-s", "-B", UP_ADDR, "-1"])
    (site.workdir / "c.pem").write_bytes(minted.cert_pem)
    (site.workdir / "c.key").write_bytes(minted.key_pem)
    kind = "ecdsa" if key_type.startswith("ec") else "rsa"
    (site.workdir / "pin.der").write_bytes(site.pins[kind])
    emu = site.topo.spawn(
        site.eh,
        [
            sys.executable,
            "-m",
            "sengd.testing.enclave_emu",
            "--server",
            f"{GW_ADDR}:{PORT}",
            "--cert",
            str(site.workdir / "c.pem"),
            "--key",
            str(site.workdir / "c.key"),
            "--pin",
            str(site.workdir / "pin.der"),
            "--tun",
            "tunE",
            "--route",
            "10.200.2.0/24",
            *(["--fast-records"] if fast_records else []),
        ],
        stdout=__import__("subprocess").PIPE,
        env=env_with_repo(),
    )
    assert emu.stdout is not None
    up = emu.stdout.readline()
    assert '"event": "up"' in up, up
    assert EXPECTED_FIRST_ASSIGNMENT.hex() in up
    assert '"ip": "192.168.28.2"' in up and '"gateway": "192.168.28.1"' in up
    site.wait_log("event=session-up")
    ping = site.eh.run("ping", "-c", "3", "-i", "0.2", "-W", "2", UP_ADDR, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    time.sleep(0.5)  # the HTTP server is up by now; curl retries briefly anyway
    assert http.poll() is None
    curl = site.eh.run(
        "curl", "-sS", "--retry", "3", "--retry-connrefused", f"http://{UP_ADDR}:8080/", check=False
    )
    assert curl.returncode == 0 and "Directory listing" in curl.stdout, curl.stderr
    iperf = site.eh.run("iperf3", "-c", UP_ADDR, "-t", "3", "-J", check=False, timeout=30)
    assert iperf.returncode == 0, iperf.stderr
    import json

    bps = json.loads(iperf.stdout)["end"]["sum_received"]["bits_per_second"]
    assert bps > 1e6, f"iperf3 through the tunnel moved only {bps} bit/s"
    assert site.stop() == 0
    assert "reason=shutdown" in site.log_text()


def test_hundred_enclaves_concurrently(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()
    minted = [mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A) for _ in range(100)]
    emulators = [site.emulator(m, timeout=20) for m in minted]
    errors: list[BaseException] = []

    def run(emu: object) -> None:
        try:
            site.connect(emu)  # type: ignore[arg-type]
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in emulators]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    addresses = {str(e.assignment.ip) for e in emulators if e.assignment}
    assert len(addresses) == 100
    assert all(a.startswith("192.168.28.") for a in addresses)
    assert "192.168.28.1" not in addresses
    for i, emu in enumerate(emulators):
        assert site.ping_upstream(emu, ident=i + 1), f"{emu.assignment} cannot ping"
    for emu in emulators:
        emu.close()
    assert site.stop() == 0
    assert site.open_leases() == []


def _badly_signed(ias: TestIas) -> MintedCertificate:
    """A certificate whose report was signed by a key other than the IAS signing key."""
    key = generate_key("rsa-2048")
    quote = make_quote_body(report_data=seng_report_data(key), mr_enclave=MR_A)
    report = ias.sign(ias.report_body(quote), signing_key=rsa.generate_private_key(65537, 2048))
    return mint_ratls_certificate(ias, key=key, report=report, mr_enclave=MR_A)


def _expect_refused(site: Site, emu: object, offset: int, reason: str) -> None:
    with pytest.raises(EmulatorError):
        site.connect(emu)  # type: ignore[arg-type]
        raise AssertionError(f"admitted although it should be refused with {reason}")
    text = site.wait_log(f"reason={reason}", offset=offset)
    assert "event=denied" in text


def test_denials_consume_nothing_and_harm_no_one(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.allow("elsewhere", MR_B, host_subnet="10.99.0.0/16")
    site.allow("debugapp", bytes.fromhex("c3" * 32))
    site.start()
    good = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    assert str(site.connect(good).ip) == "192.168.28.2"
    cases = [
        ("not-allowlisted", mint_ratls_certificate(ias, mr_enclave=bytes(32))),
        ("host-not-allowed", mint_ratls_certificate(ias, mr_enclave=MR_B)),
        (
            "debug-enclave",
            mint_ratls_certificate(ias, mr_enclave=bytes.fromhex("c3" * 32), flags=0x7),
        ),
        ("report-signature-invalid", _badly_signed(ias)),
        ("key-binding-mismatch", mint_ratls_certificate(ias, mr_enclave=MR_A, binding="wrong")),
    ]
    for reason, minted in cases:
        offset = len(site.log_text())
        _expect_refused(site, site.emulator(minted, timeout=3), offset, reason)
    # A second tunnel with another quote than tunnel #1 is refused and ends the setup.
    other = mint_ratls_certificate(ias, mr_enclave=MR_A)
    first = mint_ratls_certificate(ias, mr_enclave=MR_A)
    from sengd.testing.enclave_emu import ClientIdentity

    emu = site.emulator(
        first,
        timeout=3,
        tunnel2_identity=ClientIdentity.from_bytes(other.cert_pem, other.key_pem),
    )
    offset = len(site.log_text())
    with pytest.raises(TunnelClosed):
        site.connect(emu)
        emu.recv_packet(2)  # the gateway closes tunnel #2 right after its handshake
    site.wait_log("reason=no-matching-tunnel1", offset=offset)
    # The healthy enclave never noticed; only its address (and the pending one) is leased.
    assert site.ping_upstream(good)
    time.sleep(3.5)  # the mismatched setup's pairing window (3 s in this site) runs out
    assert [a for a, _ in site.open_leases()] == ["192.168.28.2"]
    assert site.ping_upstream(good, ident=2)


def test_a_second_tunnel_from_another_host_is_refused(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A, host_subnet="10.200.0.0/16")
    site.start()
    site.eh.run("ip", "addr", "add", "10.200.1.3/24", "dev", _veth(site))
    minted = mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A)
    emu = site.emulator(minted, timeout=3)
    with in_netns(site.eh):
        emu.handshake1()
        emu.read_assignment()
        emu.send_ack()
    other_host = site.emulator(minted, timeout=3, bind_address="10.200.1.3")
    offset = len(site.log_text())
    with pytest.raises(EmulatorError), in_netns(site.eh):
        other_host.handshake2()
        assert other_host.tunnel2 is not None
        other_host.tunnel2.recv_record(2)  # the gateway closes it after the handshake
        raise EmulatorError("tunnel #2 from another host was not closed")
    site.wait_log("reason=no-matching-tunnel1", offset=offset)


def _veth(site: Site) -> str:
    out = site.eh.run("ip", "-o", "-4", "addr", "show").stdout
    for line in out.splitlines():
        if EH_ADDR in line:
            return line.split()[1]
    raise AssertionError(out)


def test_bad_packets_are_dropped_and_counted(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    with in_netns(site.eh):
        emu.send_garbage(b"\x00garbage before the handshake")
    assignment = site.connect(emu)
    from ipaddress import IPv4Address

    from tests.integration.site import icmp_echo

    good = icmp_echo(assignment.ip, UP_ADDR, 7)
    emu.send_packet(icmp_echo(IPv4Address("192.168.28.99"), UP_ADDR, 8))  # spoofed source
    emu.send_packet(good[:30])  # truncated: total length says more
    emu.send_packet(b"\x60" + good[1:])  # IPv6 version nibble
    emu.send_garbage(b"\x17\xfe\xfd garbage after the handshake")
    emu.send_garbage(bytes(2000), tunnel=2)
    assert site.ping_upstream(emu, ident=9)
    assert site.stop() == 0
    stats = site.final_stats()
    assert stats["drops"].get("spoofed-source") == 1
    assert stats["drops"].get("length-mismatch", 0) + stats["drops"].get("truncated", 0) == 1
    assert stats["drops"].get("not-ipv4") == 1
    assert sum(sum(d.values()) for d in stats["listener_drops"]) >= 3


def test_sigkill_then_restart_reclaims_leases(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(emu)
    assert [a for a, _ in site.open_leases()] == ["192.168.28.2"]
    site.signal(signal.SIGKILL)
    assert site.process is not None
    site.process.wait(5)
    assert site.open_leases() == [("192.168.28.2", None)]
    offset = len(site.log_text())
    site.start()
    site.wait_log("event=lease-reclaimed enclave_ip=192.168.28.2", offset=offset)
    assert site.open_leases() == []
    again = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    assert str(site.connect(again).ip) == "192.168.28.3"  # fresh addresses before reuse
    assert site.stop() == 0
    assert site.open_leases() == []
    assert site.gw.run("ip", "link", "show", "tunFA", check=False).returncode != 0


def test_sighup_after_removing_an_app_closes_only_its_sessions(site: Site, ias: TestIas) -> None:
    site.allow("app-a", MR_A)
    site.allow("app-b", MR_B)
    site.start()
    a = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    b = site.emulator(mint_ratls_certificate(ias, key_type="rsa-2048", mr_enclave=MR_B))
    site.connect(a)
    site.connect(b)
    site.remove_app("app-a")
    offset = len(site.log_text())
    site.signal(signal.SIGHUP)
    site.wait_log("event=reloaded revoked=1", offset=offset)
    assert "app=app-a" in site.log_text(offset) and "reason=revoked" in site.log_text(offset)
    assert site.ping_upstream(b)
    with pytest.raises(TunnelClosed, match="close-notify"):
        site.ping_upstream(a, timeout=2)
    assert [addr for addr, _ in site.open_leases()] == [str(b.assignment.ip)]  # type: ignore[union-attr]


def _spoofed_hello(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return header + udp


def test_spoofed_client_hello_flood_keeps_memory_flat(site: Site, ias: TestIas) -> None:
    site.allow("demo", MR_A)
    site.gw.run("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
    site.start()
    # A genuine ClientHello to replay from 10,000 spoofed sources.
    from sengd.testing.enclave_emu import ClientIdentity, DtlsClient

    minted = mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A)
    client = DtlsClient(
        ClientIdentity.from_bytes(minted.cert_pem, minted.key_pem),
        pinned_server_cert=site.pins["ecdsa"],
    )
    client.start()
    hello = client.datagrams_to_send()[0]
    warm = site.emulator(minted)
    site.connect(warm)
    warm.close()
    before = site.rss_kb()
    rng = random.Random(7)
    with in_netns(site.eh):
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for i in range(10_000):
            src = f"10.200.{rng.randrange(3, 250)}.{rng.randrange(1, 254)}"
            raw.sendto(_spoofed_hello(src, 1024 + i, GW_ADDR, PORT, hello), (GW_ADDR, 0))
            if i % 500 == 0:
                time.sleep(0.01)
        raw.close()
    time.sleep(1)
    after = site.rss_kb()
    assert after - before < 4096, f"RSS grew by {after - before} kB under the flood"
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(emu)
    assert site.ping_upstream(emu)


def test_assignment_resent_once_and_tunnel2_is_an_implicit_ack(site: Site, ias: TestIas) -> None:
    """No ACK: IpAssignment comes again after `assignment_resend` (1 s here), exactly once; a
    matching tunnel #2 then pairs the session without any ACK."""
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    with in_netns(site.eh):
        emu.handshake1()
        first = emu.read_assignment()
        started = time.monotonic()
        again = emu.tunnel1.recv_record(2.5)
        resent_after = time.monotonic() - started
        assert emu.tunnel1.recv_record(1.0) is None  # only one resend
        emu.handshake2()
    assert again == first.raw
    assert 0.8 < resent_after < 2.0
    site.wait_log("event=session-up")
    assert site.ping_upstream(emu)


def test_missing_ack_and_tunnel2_fails_setup_and_frees_the_address(
    site: Site, ias: TestIas
) -> None:
    site.allow("demo", MR_A)
    site.start()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    with in_netns(site.eh):
        emu.handshake1()
        emu.read_assignment()
    assert [a for a, _ in site.open_leases()] == ["192.168.28.2"]
    site.wait_log("reason=no-ack", timeout=6)  # pairing window: 3 s in this site
    assert site.open_leases() == []
