"""How much do attested setups of new enclaves delay an established enclave's packets?

Method: a real site in namespaces (tests/integration/site.py: enclave host, gateway running
sengd, upstream host). One established enclave sends ICMP echo requests through its tunnel to the
upstream host back to back and records each round-trip time, first while the gateway is idle
("idle"), then while `--setups` other enclaves perform complete attested double-tunnel setups
from threads at the same time ("during setups"). Server CPU per setup comes from the kernel's
accounting of the sengd process (/proc/PID/stat utime+stime), not from wall time.

Run as root:  .venv/bin/python -m bench.setup_stall [--setups 64] [--concurrency 16]
Writes bench/results/setup_stall.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from tests.integration.netns import topology
from tests.integration.site import UP_ADDR, Site, icmp_echo

RESULTS = Path(__file__).resolve().parent / "results"
MR = bytes.fromhex("a1" * 32)


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rtts(
    emu: Any, stop: Any, out: list[float], limit: int, record: Any = None, pace: float = 0.005
) -> None:
    """Ping upstream through `emu` every `pace` seconds until `stop` is set or `limit` samples
    are taken; keep a sample only while `record` (an Event, if given) is set."""
    ident = 0
    assert emu.assignment is not None
    while not stop.is_set() and len(out) < limit:
        time.sleep(pace)
        ident = (ident + 1) % 65536
        sent = time.perf_counter()
        emu.send_packet(icmp_echo(emu.assignment.ip, UP_ADDR, ident))
        deadline = sent + 2.0
        while (left := deadline - time.perf_counter()) > 0:
            reply = emu.recv_packet(left)
            # Only the echo reply to this request counts (ICMP type 0, same identifier).
            if reply is not None and reply[20] == 0 and int.from_bytes(reply[24:26]) == ident:
                if record is None or record.is_set():
                    out.append((time.perf_counter() - sent) * 1000)
                break


def run_setups(
    netns: str,
    pins: dict[str, bytes],
    certs: list[tuple[bytes, bytes]],
    concurrency: int,
    running: Any = None,
) -> float:
    """In a child process: `concurrency` threads performing the setups of `certs`; returns
    the wall time they took. `running` (an Event) is set while they run."""
    from sengd.testing.enclave_emu import ClientIdentity, EnclaveEmulator
    from tests.integration.netns import Netns, in_netns
    from tests.integration.site import GW_ADDR, PORT

    ns = Netns(netns)
    queue = list(certs)
    lock = threading.Lock()
    emulators: list[EnclaveEmulator] = []

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                cert, key = queue.pop()
            with in_netns(ns):
                emu = EnclaveEmulator(
                    (GW_ADDR, PORT),
                    ClientIdentity.from_bytes(cert, key),
                    pinned_server_cert=pins["ecdsa"],
                    timeout=30,
                )
                emu.connect()
            emulators.append(emu)

    workers = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    if running is not None:
        running.set()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if running is not None:
        running.clear()
    wall = time.perf_counter() - started
    if len(emulators) != len(certs):
        raise RuntimeError(f"only {len(emulators)} of {len(certs)} setups completed")
    return wall


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "max_ms": round(ordered[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    ias = TestIas.create()
    with tempfile.TemporaryDirectory() as tmp, topology() as topo:
        site = Site(topo, Path(tmp), ias)
        site.allow("bench", MR)
        site.start()
        assert site.process is not None
        probe = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR))
        site.connect(probe)
        idle: list[float] = []
        rtts(probe, threading.Event(), idle, 300)
        ctx = multiprocessing.get_context("spawn")
        manager = ctx.Manager()

        def batch() -> list[tuple[bytes, bytes]]:
            minted = [
                mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR)
                for _ in range(args.setups)
            ]
            return [(c.cert_pem, c.key_pem) for c in minted]

        # Phase 1: server CPU per setup, nothing else running. The setups run in another
        # process so that its threads do not compete with this one for the GIL.
        with ctx.Pool(1) as pool:
            certs = batch()
            cpu0 = cpu_seconds(site.process.pid)
            wall = pool.apply(run_setups, (site.eh.name, site.pins, certs, args.concurrency))
            cpu = cpu_seconds(site.process.pid) - cpu0
            # Phase 2: the probe's RTT while another batch of setups runs.
            certs = batch()
            running = manager.Event()
            stop = threading.Event()
            busy: list[float] = []
            pinger = threading.Thread(target=rtts, args=(probe, stop, busy, 10**9, running))
            pinger.start()
            pool.apply(run_setups, (site.eh.name, site.pins, certs, args.concurrency, running))
            stop.set()
            pinger.join()
        manager.shutdown()
        site.stop()
    result = {
        "benchmark": "setup_stall",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.platform()}",
        "python": platform.python_version(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "setups": args.setups,
        "concurrency": args.concurrency,
        "setup_wall_s": round(wall, 3),
        "setups_per_s": round(args.setups / wall, 1),
        "server_cpu_ms_per_setup": round(cpu * 1000 / args.setups, 3),
        "rtt_idle": summary(idle),
        "rtt_during_setups": summary(busy),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "setup_stall.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print()
    print("| RTT through the gateway | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, key in (("idle", "rtt_idle"), ("during setups", "rtt_during_setups")):
        s = result[key]
        print(f"| {label} | {s['n']} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} |")


if __name__ == "__main__":
    main()
