"""Forwarding through a real gateway: saturation, server CPU per packet, RTT under load.

Method: a site in namespaces (tests/integration/site.py: enclave host, gateway running sengd,
upstream host); 1 or 16 emulated enclaves complete the attested double-tunnel setup, plus one
probe enclave. A load generator (bench/loadgen.py, its own process, so one core for the load
and the other for sengd) then sends IPv4/UDP packets of 64 or 1400 bytes (the whole IPv4 packet)
for `--duration` seconds:

- enclave -> gateway: DTLS records sealed with each enclave's tunnel #1 keys (taken from its
  OpenSSL session) on its own tunnel #1 socket; sengd decrypts, checks and writes them to its
  TUN; they are counted and dropped by an nftables rule on the upstream host.
- gateway -> enclave: plain UDP from the upstream host to the enclave addresses; sengd reads
  them from its TUN and seals them on tunnel #2; they are counted and dropped by an nftables
  rule on the enclave host.

"delivered" = packets counted at the far end / duration. "saturation" = the generator sends as
fast as it can; the JSON keeps its send rate so it shows whether it outran the server.
"server CPU per packet" = (utime + stime of the sengd process tree, /proc) / delivered packets,
with the generator paced at `--paced-rate` (below saturation, nothing lost). The RTT of the probe
(ICMP echo to the upstream host through its tunnels) is measured idle and during paced load.
Every figure is the median of `--repeats` runs.

Run as root:  .venv/bin/python -m bench.forward [--duration 5] [--repeats 3]
Writes bench/results/forward.{json,md} and forward-*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench.common import (
    median,
    percentile,
    process_tree_cpu,
    system_busy_seconds,
    write_results,
)
from bench.setup_stall import rtts
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EnclaveEmulator
from sengd.tunnel.keyexport import SUITES, ExportedSession, derive_keys
from tests.integration.netns import Netns, topology
from tests.integration.site import GW_ADDR, PORT, UP_ADDR, Site

MR = bytes.fromhex("b2" * 32)
REPO = Path(__file__).resolve().parent.parent


def ipv4_udp(src: IPv4Address, dst: str, size: int, sport: int) -> bytes:
    """An IPv4/UDP packet of `size` bytes in all (header checksum set, UDP checksum 0)."""
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, size, 0, 0x4000, 64, 17, 0, src.packed, socket.inet_aton(dst)
    )
    words = struct.unpack("!10H", header)
    total = sum(words)
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    udp = struct.pack("!HHHH", sport, 9, size - 20, 0)
    return header + udp + bytes(size - 28)


def client_write_key(emu: EnclaveEmulator) -> tuple[bytes, bytes]:
    """The enclave's tunnel #1 write key and salt, from its OpenSSL session."""
    conn: Any = emu.tunnel1.client._conn
    suite = {"ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B, "ECDHE-RSA-AES256-GCM-SHA384": 0xC030}[
        conn.get_cipher_name()
    ]
    session = ExportedSession(
        suite=SUITES[suite],
        master_secret=conn.master_key(),
        server_random=conn.server_random(),
        client_random=conn.client_random(),
        epoch=1,
        out_seq=0,
        in_top=0,
        in_window=0,
    )
    keys = derive_keys(session)
    return keys.client_key, keys.client_salt


class NftCounter:
    """A counting drop rule in a namespace's prerouting hook."""

    def __init__(self, ns: Netns, match: str) -> None:
        self.ns = ns
        self.match = match

    def reset(self) -> None:
        self.ns.run("nft", "delete table ip benchfw", check=False)
        self.ns.run(
            "nft",
            "add table ip benchfw; add chain ip benchfw pre "
            "{ type filter hook prerouting priority -300; }; "
            f"add rule ip benchfw pre {self.match} counter drop",
        )

    def read(self) -> int:
        out = self.ns.run("nft", "-j", "list", "chain", "ip", "benchfw", "pre").stdout
        for item in json.loads(out)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    return int(expr["counter"]["packets"])
        raise RuntimeError("no counter")


class Bench:
    def __init__(self, site: Site, load: list[EnclaveEmulator], probe: EnclaveEmulator) -> None:
        self.site = site
        self.load = load
        self.probe = probe
        self.keys = [client_write_key(emu) for emu in load]
        self.seq = 1 << 20  # far above anything the setup used; raised after every run
        assert site.process is not None
        self.pid = site.process.pid
        ports = ", ".join(str(emu.tunnel2.sock.getsockname()[1]) for emu in load if emu.tunnel2)
        self.to_enclaves = NftCounter(
            site.eh, f"ip saddr {GW_ADDR} udp sport {PORT + 1} udp dport {{ {ports} }}"
        )
        self.to_upstream = NftCounter(site.up, "udp dport 9")

    def spec(self, direction: str, enclaves: int, size: int, rate: float, duration: float) -> Any:
        flows = self.load[:enclaves]
        if direction == "e2g":
            spec = {
                "mode": "sealed",
                "fds": [emu.tunnel1.sock.fileno() for emu in flows],
                "flows": [
                    {
                        "key": self.keys[i][0].hex(),
                        "salt": self.keys[i][1].hex(),
                        "seq": self.seq,
                        "packet": ipv4_udp(emu.assignment.ip, UP_ADDR, size, 40000 + i).hex(),  # type: ignore[union-attr]
                    }
                    for i, emu in enumerate(flows)
                ],
            }
        else:
            spec = {
                "mode": "plain",
                "targets": [str(emu.assignment.ip) for emu in flows],  # type: ignore[union-attr]
                "size": size,
            }
        return {**spec, "rate": rate, "duration": duration}

    def run(
        self, direction: str, enclaves: int, size: int, rate: float, duration: float
    ) -> dict[str, float]:
        spec = self.spec(direction, enclaves, size, rate, duration)
        counter = self.to_upstream if direction == "e2g" else self.to_enclaves
        counter.reset()
        cmd = [sys.executable, "-m", "bench.loadgen"]
        if direction == "e2g":
            gen = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                pass_fds=spec["fds"],
                cwd=REPO,
            )
        else:
            gen = self.site.up.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
        cpu0 = process_tree_cpu(self.pid)
        busy0 = system_busy_seconds()
        out, _ = gen.communicate(json.dumps(spec), timeout=duration + 60)
        time.sleep(0.2)  # let the last packets drain through the gateway
        cpu = process_tree_cpu(self.pid) - cpu0
        busy = system_busy_seconds() - busy0
        delivered = counter.read()
        gen_result = json.loads(out)
        self.seq += gen_result["sent"] + 1000
        seconds = gen_result["seconds"]
        return {
            "sent_pps": gen_result["sent"] / seconds,
            "delivered_pps": delivered / seconds,
            "loss": 1 - delivered / max(1, gen_result["sent"]),
            "server_cpu_us_per_packet": cpu * 1e6 / max(1, delivered),
            "server_cpu_share": cpu / seconds,
            "generator_cpu_share": gen_result["cpu"] / seconds,
            # Everything else the 2 CPUs did meanwhile: other processes and kernel softirq.
            "other_cpu_share": (busy - cpu - gen_result["cpu"]) / seconds,
        }

    def ping(self, samples: int) -> dict[str, float]:
        out: list[float] = []
        rtts(self.probe, threading.Event(), out, samples, pace=0.002)
        return {
            "n": len(out),
            "p50_ms": round(median(out), 3),
            "p99_ms": round(percentile(out, 0.99), 3),
        }

    def ping_under_load(self, direction: str, rate: float, duration: float) -> dict[str, float]:
        result: dict[str, Any] = {}

        def probe() -> None:
            time.sleep(0.5)
            result.update(self.ping(int((duration - 1.0) / 0.0025)))

        thread = threading.Thread(target=probe)
        thread.start()
        load = self.run(direction, 16, 1400, rate, duration)
        thread.join()
        return {**result, "load_delivered_pps": round(load["delivered_pps"])}


def isolate(pid: int) -> None:
    """sengd's forwarding process on CPU 0, everything else of the benchmark on CPU 1 (the
    load generator is spawned from this process and inherits it)."""
    os.sched_setaffinity(pid, {0})
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        os.sched_setaffinity(int(child), {1})
    os.sched_setaffinity(0, {1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paced-rate", type=float, default=40000)
    parser.add_argument("--enclaves", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1400])
    parser.add_argument("--extra-config", default="", help="appended to the gateway's config")
    parser.add_argument(
        "--isolate-forwarding",
        action="store_true",
        help="sengd's forwarding process alone on CPU 0; its handshake workers, the load "
        "generator and this process on CPU 1 (writes forward-isolated.*)",
    )
    args = parser.parse_args()
    ias = TestIas.create()
    with tempfile.TemporaryDirectory() as tmp, topology() as topo, ExitStack() as stack:
        site = Site(topo, Path(tmp), ias)
        if args.extra_config:
            site.write_config(args.extra_config)
        site.allow("bench", MR)
        site.start()
        if args.isolate_forwarding:
            assert site.process is not None
            isolate(site.process.pid)
        emus = []
        for _ in range(max(args.enclaves) + 1):
            minted = mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR)
            emu = stack.enter_context(site.emulator(minted))
            site.connect(emu)
            emus.append(emu)
        bench = Bench(site, emus[1:], emus[0])
        runs: list[dict[str, Any]] = []
        for direction in ("e2g", "g2e"):
            for enclaves in args.enclaves:
                for size in args.sizes:
                    sat = [
                        bench.run(direction, enclaves, size, 0, args.duration)
                        for _ in range(args.repeats)
                    ]
                    paced = [
                        bench.run(direction, enclaves, size, args.paced_rate, args.duration)
                        for _ in range(args.repeats)
                    ]
                    row = {
                        "direction": direction,
                        "enclaves": enclaves,
                        "size": size,
                        "saturation_delivered_pps": median([r["delivered_pps"] for r in sat]),
                        "saturation_sent_pps": median([r["sent_pps"] for r in sat]),
                        "saturation_server_cpu_share": median([r["server_cpu_share"] for r in sat]),
                        "saturation_other_cpu_share": median([r["other_cpu_share"] for r in sat]),
                        "paced_rate": args.paced_rate,
                        "paced_loss": median([r["loss"] for r in paced]),
                        "server_cpu_us_per_packet": median(
                            [r["server_cpu_us_per_packet"] for r in paced]
                        ),
                        "runs": {"saturation": sat, "paced": paced},
                    }
                    print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
                    runs.append(row)
        rtt = {
            "idle": bench.ping(1000),
            "e2g_load": bench.ping_under_load("e2g", args.paced_rate, args.duration),
            "g2e_load": bench.ping_under_load("g2e", args.paced_rate, args.duration),
        }
        print(json.dumps(rtt), flush=True)
        site.stop()
    names = {"e2g": "enclave->gateway", "g2e": "gateway->enclave"}
    rows = [
        (
            names[r["direction"]],
            r["enclaves"],
            r["size"],
            round(r["saturation_delivered_pps"]),
            round(r["saturation_sent_pps"]),
            round(r["saturation_server_cpu_share"] * 100),
            round(r["saturation_other_cpu_share"] * 100),
            r["server_cpu_us_per_packet"],
            f"{r['paced_loss'] * 100:.2f}%",
        )
        for r in runs
    ]
    rows += [
        (f"ping RTT {label}", 1, 84, "", "", "", f"p50 {v['p50_ms']} ms", f"p99 {v['p99_ms']} ms")
        for label, v in rtt.items()
    ]

    def bars(key: str, label: str) -> Any:
        def draw(ax: Any) -> None:
            labels = [f"{names[r['direction']]}\n{r['enclaves']} encl, {r['size']} B" for r in runs]
            ax.bar(range(len(runs)), [r[key] for r in runs])
            ax.set_xticks(range(len(runs)), labels, fontsize=6)
            ax.set_ylabel(label)

        return draw

    write_results(
        "forward-isolated" if args.isolate_forwarding else "forward",
        {"method": __doc__, "args": vars(args), "runs": runs, "rtt": rtt},
        rows,
        (
            "direction",
            "enclaves",
            "packet bytes",
            "saturation delivered pps",
            "generator sent pps",
            "sengd CPU % at saturation",
            "other CPU % (processes, softirq)",
            f"sengd CPU µs/packet at {args.paced_rate:.0f} pps",
            "loss when paced",
        ),
        {
            "saturation": bars("saturation_delivered_pps", "delivered packets/s"),
            "cpu": bars("server_cpu_us_per_packet", "server CPU µs per packet"),
        },
        notes=(
            f"Median of {args.repeats} runs of {args.duration:.0f} s. Server CPU = utime+stime "
            "of the sengd process tree (/proc). Delivered = counted by nftables at the far end."
        ),
    )


if __name__ == "__main__":
    main()
