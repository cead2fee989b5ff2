"""The enclave emulator over real loopback UDP against DtlsListeners (the mini gateway)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from sengd.testing.enclave_emu import (
    ClientIdentity,
    EmulatorError,
    EnclaveEmulator,
    TunnelClosed,
)
from sengd.tunnel.dtls import CloseReason, DropReason
from tests.unit.tunnel.certs import client_identity, server_credential
from tests.unit.tunnel.minigw import MiniGateway

REPO = Path(__file__).resolve().parents[3]
ASSIGNMENT = bytes.fromhex("08c0d1f21010ffffff0718c0d1f208")


def ipv4_packet(payload: bytes, src: str = "192.168.28.2", dst: str = "10.20.0.2") -> bytes:
    total = 20 + len(payload)
    header = (
        bytes([0x45, 0])
        + total.to_bytes(2, "big")
        + b"\x00\x01\x00\x00\x40\x11\x00\x00"
        + IPv4Address(src).packed
        + IPv4Address(dst).packed
    )
    return header + payload


def emulator(gw: MiniGateway, kind: str, **kwargs: object) -> EnclaveEmulator:
    return EnclaveEmulator(
        (gw.address, gw.port),
        client_identity(kind),
        pinned_server_cert=server_credential(kind).certificate_der,
        timeout=10.0,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_full_client_sequence(kind: str) -> None:
    with MiniGateway([server_credential("rsa"), server_credential("ecdsa")]) as gw:
        emu = emulator(gw, kind)
        assignment = emu.connect()
        assert assignment.raw == ASSIGNMENT
        assert str(assignment.ip) == "192.168.28.2"
        assert str(assignment.netmask) == "255.255.255.0"
        assert str(assignment.gateway) == "192.168.28.1"
        assert assignment.prefixlen == 24
        gw.wait_for(lambda: len(gw.seen.handshakes) == 2 and bool(gw.seen.acks))
        assert gw.seen.acks == [IPv4Address("192.168.28.2")]
        (t1, addr1, cert1), (t2, addr2, cert2) = gw.seen.handshakes
        assert (t1, t2) == (1, 2)
        assert addr1[0] == addr2[0] == "127.0.0.1" and addr1[1] != addr2[1]
        assert cert1 == cert2 == client_identity(kind).certificate_der
        assert emu.tunnel2 is not None
        assert emu.tunnel1.client.server_certificate == server_credential(kind).certificate_der

        packets = [ipv4_packet(os.urandom(1380)) for _ in range(20)]
        for packet in packets:
            emu.send_packet(packet)
        echoed = [emu.recv_packet(5.0) for _ in packets]
        assert echoed == packets
        assert emu.recv_packet(0.1) is None

        emu.close()
        gw.wait_for(lambda: len(gw.seen.closed) == 2)
        assert sorted((t, e.reason) for t, e in gw.seen.closed) == [
            (1, CloseReason.CLOSE_NOTIFY),
            (2, CloseReason.CLOSE_NOTIFY),
        ]


def test_gateway_closing_both_tunnels_is_observed() -> None:
    with MiniGateway([server_credential("ecdsa")]) as gw:
        emu = emulator(gw, "ecdsa")
        emu.connect()
        assert emu.close_reasons == (None, None)
        assert not emu.wait_closed(0.2)
        gw.wait_for(lambda: len(gw.seen.handshakes) == 2)
        with gw._lock:
            for index, (tunnel, addr, _) in enumerate(gw.seen.handshakes):
                assert tunnel == index + 1
                gw.listeners[index].close(addr)
            gw._flush()
        assert emu.wait_closed(5.0)
        assert emu.close_reasons == ("close-notify", "close-notify")
        emu.close()


def test_denial_after_handshake_surfaces_as_tunnel_closed() -> None:
    with MiniGateway([server_credential("rsa")], deny=True) as gw:
        emu = emulator(gw, "rsa")
        emu.handshake1()
        with pytest.raises(TunnelClosed, match="close-notify"):
            emu.read_assignment(timeout=5.0)
        emu.close()


@pytest.mark.parametrize("key_type", ["rsa-2048", "ec-p384"])
def test_real_ratls_certificate_with_serial_zero(key_type: str) -> None:
    from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate

    minted = mint_ratls_certificate(TestIas.create(ca_key_size=2048), key_type=key_type)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cryptography deprecation for the serial 0
        identity = ClientIdentity.from_bytes(minted.cert_pem, minted.key_pem)
    assert identity.certificate_der == minted.cert_der
    assert 4000 < len(minted.cert_der) < 8192  # ~5-6.5 KB with the real 3072-bit Intel CA
    kind = "rsa" if key_type.startswith("rsa") else "ecdsa"
    with MiniGateway([server_credential("rsa"), server_credential("ecdsa")]) as gw:
        emu = EnclaveEmulator(
            (gw.address, gw.port),
            identity,
            pinned_server_cert=server_credential(kind).certificate_der,
            timeout=10.0,
        )
        emu.connect()
        gw.wait_for(lambda: len(gw.seen.handshakes) == 2)
        assert [cert for _, _, cert in gw.seen.handshakes] == [minted.cert_der] * 2
        emu.close()


def test_identity_loading_errors() -> None:
    with pytest.raises(ValueError, match="certificate does not parse"):
        ClientIdentity.from_bytes(b"junk", client_identity_pem_key())
    with pytest.raises(ValueError, match="private key does not load"):
        ClientIdentity.from_bytes(client_identity("rsa").certificate_der, b"junk")


def client_identity_pem_key() -> bytes:
    return client_identity("rsa").private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_pinned_certificate_mismatch_aborts() -> None:
    with MiniGateway([server_credential("ecdsa")]) as gw:
        emu = EnclaveEmulator(
            (gw.address, gw.port),
            client_identity("ecdsa"),
            pinned_server_cert=server_credential("rsa").certificate_der,
            timeout=5.0,
        )
        with pytest.raises(EmulatorError, match="pin"):
            emu.handshake1()
        emu.close()
        gw.wait_for(lambda: len(gw.seen.closed) == 1)
        assert gw.seen.closed[0][1].reason == CloseReason.HANDSHAKE_FAILED


def test_skip_ack_and_malformed_ack() -> None:
    with MiniGateway([server_credential("ecdsa")]) as gw:
        skipper = emulator(gw, "ecdsa")
        skipper.handshake1()
        skipper.read_assignment()
        skipper.handshake2()
        gw.wait_for(lambda: len(gw.seen.handshakes) == 2)
        assert gw.seen.acks == []

        garbler = emulator(gw, "ecdsa")
        garbler.handshake1()
        garbler.read_assignment()
        garbler.send_malformed_ack()
        gw.wait_for(lambda: bool(gw.seen.bad_acks))
        assert "IpAssignACK" in gw.seen.bad_acks[0]
        assert gw.seen.acks == []
        skipper.close()
        garbler.close()


def test_other_certificate_on_tunnel2_is_refused_by_pairing() -> None:
    with MiniGateway([server_credential("rsa")]) as gw:
        emu = emulator(gw, "rsa", tunnel2_identity=client_identity("rsa", cn="impostor"))
        emu.handshake1()
        emu.read_assignment()
        emu.send_ack()
        emu.handshake2()
        gw.wait_for(lambda: bool(gw.seen.pairing_refused))
        assert emu.tunnel2 is not None
        with pytest.raises(TunnelClosed, match="close-notify"):
            emu.recv_packet(5.0)
        certs = [cert for _, _, cert in gw.seen.handshakes]
        assert certs[0] != certs[1]
        emu.close()


def test_garbage_and_raw_records_are_dropped_and_the_tunnels_survive() -> None:
    with MiniGateway([server_credential("ecdsa")]) as gw:
        emu = emulator(gw, "ecdsa")
        emu.connect()
        for tunnel in (1, 2):
            emu.send_garbage(b"\x00garbage", tunnel=tunnel)
            emu.send_garbage(os.urandom(300), tunnel=tunnel)
            emu.send_raw_record(b"\x45" + os.urandom(40), tunnel=tunnel)
            emu.send_raw_record(b"\x01\x00", content_type=21, epoch=0, tunnel=tunnel)
        gw.wait_for(lambda: sum(gw.drops(1).values()) >= 3 and sum(gw.drops(2).values()) >= 3)
        assert gw.drops(1).get(DropReason.DISCARDED.value, 0) >= 1
        packet = ipv4_packet(b"still here")
        emu.send_packet(packet)
        assert emu.recv_packet(5.0) == packet
        assert gw.seen.closed == []
        emu.close()


def test_stop_mid_handshake_times_out_at_the_gateway() -> None:
    with MiniGateway([server_credential("ecdsa")], handshake_timeout=1.0) as gw:
        emu = emulator(gw, "ecdsa")
        emu.handshake1(stop_after_datagrams=1)  # saw the HVR, sent the cookie hello, stopped
        gw.wait_for(lambda: bool(gw.seen.closed), timeout=5.0)
        assert gw.seen.closed[0][1].reason == CloseReason.HANDSHAKE_TIMEOUT
        assert gw.seen.handshakes == []
        emu.close()


def test_emulator_without_extended_master_secret() -> None:
    with MiniGateway([server_credential("rsa")]) as gw:
        emu = emulator(gw, "rsa", extended_master_secret=False)
        emu.connect()
        assert not emu.tunnel1.client.extended_master_secret
        emu.close()


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sengd.testing.enclave_emu", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0
    for option in ("--server", "--cert", "--key", "--pin", "--tun", "--route", "--hold"):
        assert option in result.stdout


def write_identity(tmp_path: Path, identity: ClientIdentity, pin: bytes) -> list[str]:
    cert = tmp_path / "enclave.crt"
    key = tmp_path / "enclave.key"
    pinned = tmp_path / "server.der"
    cert.write_bytes(identity.certificate_der)  # DER: the CLI takes PEM or DER
    key.write_bytes(
        identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pinned.write_bytes(pin)
    return ["--cert", str(cert), "--key", str(key), "--pin", str(pinned)]


def read_event(process: subprocess.Popen[str], timeout: float = 15.0) -> dict[str, object]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            event: dict[str, object] = json.loads(line)
            return event
        if process.poll() is not None:
            break
    raise AssertionError("no event from the emulator")


def test_cli_hold_until_sigterm(tmp_path: Path) -> None:
    identity = client_identity("ecdsa")
    args = write_identity(tmp_path, identity, server_credential("ecdsa").certificate_der)
    with MiniGateway([server_credential("ecdsa")]) as gw:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sengd.testing.enclave_emu",
                "--server",
                f"{gw.address}:{gw.port}",
                "--hold",
                *args,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            up = read_event(process)
            assert up["event"] == "up"
            assert up["ip"] == "192.168.28.2" and up["prefixlen"] == 24
            assert up["raw"] == ASSIGNMENT.hex()
            process.send_signal(signal.SIGTERM)
            down = read_event(process)
            assert down == {"event": "down", "reason": "stopped"}
            assert process.wait(10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        gw.wait_for(lambda: len(gw.seen.closed) == 2)
        assert {e.reason for _, e in gw.seen.closed} == {CloseReason.CLOSE_NOTIFY}


def test_cli_reports_a_refused_connection(tmp_path: Path) -> None:
    args = write_identity(
        tmp_path, client_identity("rsa"), server_credential("ecdsa").certificate_der
    )
    with MiniGateway([server_credential("rsa")]) as gw:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sengd.testing.enclave_emu",
                "--server",
                f"{gw.address}:{gw.port}",
                "--timeout",
                "5",
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    event = json.loads(result.stdout.splitlines()[-1])
    assert event["event"] == "failed" and "pin" in str(event["reason"])


def test_cli_usage_errors(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "sengd.testing.enclave_emu", "--server", "127.0.0.1:5"]
    missing_pin = subprocess.run(
        [*base, "--cert", "x", "--key", "y"], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert missing_pin.returncode == 2 and "--pin" in missing_pin.stderr
    unreadable = subprocess.run(
        [*base, "--cert", str(tmp_path / "none"), "--key", "y", "--no-pin"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert unreadable.returncode == 2 and "error" in unreadable.stderr
    bad_server = subprocess.run(
        [*base[:-2], "--server", "nohost", "--cert", "x", "--key", "y"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert bad_server.returncode == 2 and "IPV4:PORT" in bad_server.stderr


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.mark.integration
def test_cli_tun_forwards_ping_in_a_network_namespace(tmp_path: Path) -> None:
    """ping from inside the emulated enclave's namespace goes through TUN and both tunnels."""
    tag = uuid.uuid4().hex[:6]
    netns, host_if, ns_if = f"sengemu-{tag}", f"seh{tag}", f"sen{tag}"
    host_ip, ns_ip = "10.213.77.1", "10.213.77.2"
    args = write_identity(
        tmp_path, client_identity("rsa"), server_credential("rsa").certificate_der
    )
    run("ip", "netns", "add", netns)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", netns)
        run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", netns, "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        run("ip", "-n", netns, "link", "set", ns_if, "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        with MiniGateway([server_credential("rsa")], address=host_ip) as gw:
            process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    netns,
                    sys.executable,
                    "-m",
                    "sengd.testing.enclave_emu",
                    "--server",
                    f"{host_ip}:{gw.port}",
                    "--tun",
                    "tunE",
                    *args,
                    "--route",
                    "10.99.0.0/16",
                ],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            try:
                up = read_event(process)
                assert up["event"] == "up" and up["tun"] == "tunE"
                links = subprocess.run(
                    ["ip", "-n", netns, "-o", "addr", "show", "dev", "tunE"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                assert "192.168.28.2/24" in links
                for target in ("192.168.28.1", "10.99.0.7"):
                    ping = subprocess.run(
                        [
                            "ip",
                            "netns",
                            "exec",
                            netns,
                            "ping",
                            "-c",
                            "3",
                            "-i",
                            "0.2",
                            "-W",
                            "2",
                            "-s",
                            "1300",
                            target,
                        ],
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    assert ping.returncode == 0, ping.stdout + ping.stderr
                    assert " 0% packet loss" in ping.stdout
                assert any(p[16:20] == IPv4Address("10.99.0.7").packed for p in gw.seen.packets)
                process.send_signal(signal.SIGTERM)
                assert read_event(process)["event"] == "down"
                assert process.wait(10) == 0
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            gw.wait_for(lambda: len(gw.seen.closed) == 2)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
