"""A whole test site in namespaces: enclave host <-> gateway (sengd) <-> upstream servers.

    enclave host (eh) 10.200.1.2 --veth-- 10.200.1.1 gateway (gw) 10.200.2.1 --veth-- upstream
                                          sengd on :12345/12346, TUN tunFA       10.200.2.2

The upstream namespace routes the enclave subnets back through the gateway, so enclave traffic
is forwarded without NAT. Enclaves are `EnclaveEmulator`s whose sockets are made inside the
enclave-host namespace (`in_netns`), or the emulator's CLI with its own TUN for real tools.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from sengd.store.db import open_database, session_factory
from sengd.store.models import App, EnclaveSubnet, HostRouteRow
from sengd.store.subnets import add_enclave_subnet
from sengd.testing.attestation_kit import MintedCertificate, TestIas
from sengd.testing.enclave_emu import ClientIdentity, EnclaveEmulator
from tests.integration.netns import Netns, Topology, in_netns

GW_ADDR = "10.200.1.1"
EH_ADDR = "10.200.1.2"
UP_ADDR = "10.200.2.2"
PORT = 12345


def _self_signed(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seng test gateway")])
    now = time.time()
    import datetime as dt

    start = dt.datetime.fromtimestamp(now - 3600, dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def icmp_echo(src: IPv4Address, dst: str, ident: int, payload: bytes = b"seng") -> bytes:
    """An IPv4 ICMP echo request with correct checksums."""

    def csum(data: bytes) -> int:
        if len(data) % 2:
            data += b"\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        total = (total >> 16) + (total & 0xFFFF)
        total += total >> 16
        return ~total & 0xFFFF

    icmp = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(icmp),
        ident,
        0,
        64,
        1,
        0,
        src.packed,
        socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", csum(header)) + header[12:]
    return header + icmp


@dataclass
class Site:
    """The three namespaces, the gateway's files and its sengd process."""

    topo: Topology
    workdir: Path
    ias: TestIas
    eh: Netns = field(init=False)
    gw: Netns = field(init=False)
    up: Netns = field(init=False)
    config_path: Path = field(init=False)
    db_url: str = field(init=False)
    log_path: Path = field(init=False)
    process: subprocess.Popen[str] | None = None
    pins: dict[str, bytes] = field(default_factory=dict)
    socket_path: Path | None = None
    admin_group: str = "seng-admin"
    monitor_group: str = "seng-monitor"

    def __post_init__(self) -> None:
        self.eh = self.topo.netns("eh")
        self.gw = self.topo.netns("gw")
        self.up = self.topo.netns("up")
        self.topo.link(self.eh, f"{EH_ADDR}/24", self.gw, f"{GW_ADDR}/24")
        self.topo.link(self.gw, "10.200.2.1/24", self.up, f"{UP_ADDR}/24")
        self.gw.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.up.run("ip", "route", "add", "192.168.0.0/16", "via", "10.200.2.1")
        self.up.run("ip", "route", "add", "172.16.0.0/12", "via", "10.200.2.1")
        self.db_url = f"sqlite:///{self.workdir / 'seng.db'}"
        if self.socket_path is None:
            self.socket_path = self.workdir / "sengd.sock"
        self.log_path = self.workdir / "sengd.log"
        (self.workdir / "ca.pem").write_bytes(self.ias.ca_pem)
        for kind, key in (
            ("ecdsa", ec.generate_private_key(ec.SECP384R1())),
            ("rsa", rsa.generate_private_key(65537, 2048)),
        ):
            cert = _self_signed(key)
            (self.workdir / f"server-{kind}.crt").write_bytes(cert)
            (self.workdir / f"server-{kind}.key").write_bytes(_key_pem(key))
            self.pins[kind] = x509.load_pem_x509_certificate(cert).public_bytes(
                serialization.Encoding.DER
            )
        self.write_config()

    def write_config(self, extra: str = "", tunnel: str = "") -> None:
        """Write seng.toml; `tunnel` adds keys to [tunnel], `extra` adds sections at the end."""
        w = self.workdir
        self.config_path = w / "seng.toml"
        self.config_path.write_text(
            f"""
[gateway]
id = "gw-test"
log_level = "debug"
[tunnel]
address = "{GW_ADDR}"
port = {PORT}
ecdsa_certificate = "{w}/server-ecdsa.crt"
ecdsa_private_key = "{w}/server-ecdsa.key"
rsa_certificate = "{w}/server-rsa.crt"
rsa_private_key = "{w}/server-rsa.key"
assignment_resend = 1.0
pairing_timeout = 3.0
{tunnel}
[attestation]
ias_report_signing_ca = "{w}/ca.pem"
[database]
url = "{self.db_url}"
[control]
socket = "{self.socket_path}"
admin_group = "{self.admin_group}"
monitor_group = "{self.monitor_group}"
{extra}
"""
        )

    # -- the allowlist, provisioned offline in the database ------------------------------------

    def add_subnet(self, cidr: str, name: str) -> int:
        engine = open_database(self.db_url)
        try:
            with session_factory(engine)() as s, s.begin():
                return int(add_enclave_subnet(s, IPv4Network(cidr), name=name).id)
        finally:
            engine.dispose()

    def allow(
        self,
        name: str,
        mr_enclave: bytes,
        host_subnet: str = "10.200.1.0/24",
        subnet_id: int | None = None,
        **overrides: Any,
    ) -> int:
        engine = open_database(self.db_url)
        try:
            with session_factory(engine)() as s, s.begin():
                if subnet_id is None:
                    subnet = s.scalars(select(EnclaveSubnet).order_by(EnclaveSubnet.id)).first()
                    if subnet is None:
                        subnet = add_enclave_subnet(
                            s, IPv4Network("192.168.28.0/24"), name="default"
                        )
                    subnet_id = subnet.id
                host = IPv4Network(host_subnet)
                app = App(name=name, mr_enclave=mr_enclave, **overrides)
                app.host_routes.append(
                    HostRouteRow(
                        host_network=int(host.network_address),
                        host_prefix_len=host.prefixlen,
                        enclave_subnet_id=subnet_id,
                    )
                )
                s.add(app)
                s.flush()
                return int(app.id)
        finally:
            engine.dispose()

    def remove_app(self, name: str) -> None:
        engine = open_database(self.db_url)
        try:
            with session_factory(engine)() as s, s.begin():
                for app in s.scalars(select(App).where(App.name == name)):
                    s.delete(app)
        finally:
            engine.dispose()

    def open_leases(self) -> list[tuple[str, str | None]]:
        engine = open_database(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT address, end_reason FROM leases WHERE ended_at IS NULL"
                ).all()
                return [(str(IPv4Address(r[0])), r[1]) for r in rows]
        finally:
            engine.dispose()

    def audit_actions(self) -> list[tuple[str, str]]:
        """(action, actor name) of every audit event, oldest first."""
        engine = open_database(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT action, actor_name FROM audit_events ORDER BY id"
                ).all()
                return [(str(r[0]), str(r[1])) for r in rows]
        finally:
            engine.dispose()

    # -- sengd ----------------------------------------------------------------------------

    def start(self, python_prelude: str = "") -> None:
        """Start sengd; `python_prelude` runs in its interpreter first (e.g. a prctl)."""
        log = open(self.log_path, "a")  # noqa: SIM115 - the process owns it until it exits
        offset = self.log_path.stat().st_size
        argv = [sys.executable, "-m", "sengd", "--config", str(self.config_path)]
        if python_prelude:
            argv = [
                sys.executable,
                "-c",
                f"{python_prelude}\nimport runpy, sys\nsys.argv = {argv[2:]!r}\n"
                "runpy.run_module('sengd', run_name='__main__')",
            ]
        self.process = self.topo.spawn(
            self.gw,
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.wait_log("event=started", timeout=30, offset=offset)

    def log_text(self, offset: int = 0) -> str:
        return self.log_path.read_text()[offset:]

    def wait_log(self, needle: str, timeout: float = 10, offset: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text(offset)
            if needle in text:
                return text
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in sengd log:\n{self.log_text()[-4000:]}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 5) -> int:
        """SIGTERM and wait; return the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def rss_kb(self) -> int:
        assert self.process is not None
        # `ip netns exec` execs the command, so the Popen pid is sengd itself.
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        assert match
        return int(match.group(1))

    def final_stats(self) -> dict[str, Any]:
        match = re.search(r"event=final-stats stats=\"(.*)\"", self.log_text())
        assert match, "no final-stats line"
        return dict(json.loads(match.group(1).replace('\\"', '"')))

    # -- enclaves -------------------------------------------------------------------------

    def emulator(self, minted: MintedCertificate, **kwargs: Any) -> EnclaveEmulator:
        """An emulated enclave on the enclave host; its sockets live in that namespace."""
        kind = "ecdsa" if minted.key_type.startswith("ec") else "rsa"
        identity = ClientIdentity.from_bytes(minted.cert_pem, minted.key_pem)
        with in_netns(self.eh):
            return EnclaveEmulator(
                (GW_ADDR, PORT),
                identity,
                pinned_server_cert=self.pins[kind],
                timeout=kwargs.pop("timeout", 10.0),
                **kwargs,
            )

    def connect(self, emu: EnclaveEmulator) -> Any:
        with in_netns(self.eh):
            return emu.connect()

    def handshake2(self, emu: EnclaveEmulator) -> None:
        with in_netns(self.eh):
            emu.handshake2()

    def ping_upstream(self, emu: EnclaveEmulator, ident: int = 1, timeout: float = 3) -> bool:
        """Send an ICMP echo to the upstream host through the tunnel; True if the reply came."""
        assert emu.assignment is not None
        emu.send_packet(icmp_echo(emu.assignment.ip, UP_ADDR, ident))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = emu.recv_packet(max(deadline - time.monotonic(), 0.01))
            if (
                reply
                and reply[9] == 1
                and reply[20] == 0
                and reply[12:16] == socket.inet_aton(UP_ADDR)
            ):
                return True
        return False


def env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env
