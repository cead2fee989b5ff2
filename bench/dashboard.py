"""Does the dashboard stay responsive with 1,000 live sessions?

Method: a real site in namespaces (tests/integration/site.py) with a real sengd and an
enclave subnet of /21. `--sessions` emulated enclaves (distinct EC keys and reports) complete
their attested double-tunnel setup from a few processes. A traffic process in the upstream namespace
then sends UDP datagrams round robin to every enclave address (`--pps` a second), so every
session's tx counters and rates change between two polls: the worst case for the table, whose
every row changes each time. The dashboard runs headless (Textual `run_test`) in this process,
polling `sessions.list` every `--refresh` seconds, for `--seconds` seconds per terminal size.

Measured (perf_counter, in this process):
- rpc:     `sessions.list` round trip of 1,000 sessions through the control socket (daemon
           serialisation, socket, JSON decoding), measured with a second client;
- update:  the app's handling of one poll answer: the state merge (`load_sessions`) and the
           table update in place (`sessions_sync`: diff, changed cells, re-sort);
- frame:   composing and rendering one full frame of the sessions screen (Textual's
           compositor, the work a repaint does), taken after each update;
- key:     a cursor key press (as the terminal driver delivers it) until the table has
           moved its cursor, pressed every 50 ms while the updates keep coming;
- ready:   from the app's start to the table holding every session.
The emulated enclaves live in `--processes` other processes (idle once set up); the traffic
process and sengd share the machine's two cores with the app, so the figures are upper bounds.

Run as root:  .venv/bin/python -m bench.dashboard [--sessions 1000] [--seconds 20]
Writes bench/results/dashboard.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console

from sengadm.aclient import AsyncClient
from sengadm.tui.app import SengDashboard
from sengadm.tui.widgets.sessions_table import SessionsTable
from sengd.testing.attestation_kit import MintedCertificate, TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EnclaveEmulator
from tests.integration.netns import topology
from tests.integration.site import UP_ADDR, Site

RESULTS = Path(__file__).resolve().parent / "results"
MR = bytes.fromhex("d5" * 32)
SUBNET = "172.20.0.0/21"

TRAFFIC = """
import socket, sys, time
targets = sys.argv[1].split(",")
pps = int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("{up}", 0))
payload = b"x" * 400
i = 0
start = time.monotonic()
while True:
    for _ in range(50):
        sock.sendto(payload, (targets[i % len(targets)], 9))
        i += 1
    ahead = i / pps - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
""".replace("{up}", UP_ADDR)


def summary(samples: list[float]) -> dict[str, float | int]:
    """n, median, p95 and max in milliseconds."""
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0}
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def render_frame(app: SengDashboard) -> float:
    """Seconds to compose and render one full frame of the current screen."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
    )
    started = time.perf_counter()
    update = app.screen._compositor.render_update(full=True)
    console.print(update)
    return time.perf_counter() - started


async def key_latency(app: SengDashboard, table: SessionsTable, key: str) -> float | None:
    """Seconds from a key press (as the terminal driver delivers it) until the table has
    moved its cursor; None if it did not within a second."""
    before = table.cursor_row
    started = time.perf_counter()
    app.simulate_key(key)
    while table.cursor_row == before:
        if time.perf_counter() - started > 1.0:
            return None
        await asyncio.sleep(0.0005)
    return time.perf_counter() - started


def enclave_host(site: Site, certs: list[MintedCertificate], threads: int, pipe: Any) -> None:
    """A process holding `certs`' enclaves: set them up, report their addresses, keep them
    open until told to stop (select() in the emulator limits one process to 1024 sockets)."""

    def one(minted: MintedCertificate) -> EnclaveEmulator:
        emu = site.emulator(minted, timeout=60)
        site.connect(emu)
        return emu

    with ThreadPoolExecutor(threads) as pool:
        emus = list(pool.map(one, certs))
    pipe.send([str(e.assignment.ip) for e in emus if e.assignment is not None])
    pipe.recv()
    for emu in emus:
        emu.close()
    pipe.send("closed")


def connect_all(
    site: Site, certs: list[MintedCertificate], processes: int
) -> tuple[list[str], list[Any]]:
    """Attested setups of every enclave from `processes` processes; (addresses, handles)."""
    context = multiprocessing.get_context("fork")
    handles = []
    share = -(-len(certs) // processes)
    for i in range(processes):
        ours, theirs = context.Pipe()
        worker = context.Process(
            target=enclave_host, args=(site, certs[i * share : (i + 1) * share], 4, theirs)
        )
        worker.start()
        handles.append((worker, ours))
    addresses: list[str] = []
    for _, pipe in handles:
        addresses += pipe.recv()
    return addresses, handles


def close_all(handles: list[Any]) -> None:
    for _, pipe in handles:
        pipe.send("stop")
    for worker, pipe in handles:
        if pipe.poll(60):
            pipe.recv()
        worker.join(10)
        if worker.is_alive():
            worker.kill()


async def rpc_round_trips(socket_path: Path, count: int) -> list[float]:
    client = await AsyncClient.connect(socket_path)
    times = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await client.call("sessions.list")
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.2)
    finally:
        await client.close()
    return times


async def measure(
    socket_path: Path, sessions: int, size: tuple[int, int], seconds: float, refresh: float
) -> dict[str, Any]:
    app = SengDashboard(socket_path, refresh=refresh)
    frames: list[float] = []
    keys: list[float] = []
    started = time.perf_counter()
    async with app.run_test(size=size) as pilot:
        table = app.screen.query_one(SessionsTable)
        while table.row_count < sessions:
            await pilot.pause(0.05)
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"only {table.row_count} rows after 60 s")
        ready = time.perf_counter() - started
        app.timings.clear()
        await pilot.press("s", "s", "s", "s", "s", "r")  # sort by TX/s, highest first
        deadline = time.monotonic() + seconds
        seen = presses = 0
        while time.monotonic() < deadline:
            synced = len(app.timings.get("sessions_sync", []))
            if synced != seen:
                seen = synced
                frames.append(render_frame(app))
            presses += 1
            key = "down" if presses % 40 < 20 else "up"
            if table.cursor_row >= table.row_count - 1:
                key = "up"
            elif table.cursor_row == 0:
                key = "down"
            latency = await key_latency(app, table, key)
            if latency is not None:
                keys.append(latency)
            await asyncio.sleep(0.05)
        rows = table.row_count
        timings = {k: list(v) for k, v in app.timings.items()}
    return {
        "terminal": f"{size[0]}x{size[1]}",
        "rows": rows,
        "ready_s": round(ready, 2),
        "update_state": summary(timings.get("load_sessions", [])),
        "update_table": summary(timings.get("sessions_sync", [])),
        "frame": summary(frames),
        "key": summary(keys),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--refresh", type=float, default=1.0)
    parser.add_argument("--pps", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=4, help="enclave host processes")
    args = parser.parse_args()

    ias = TestIas.create()
    minted = [
        mint_ratls_certificate(ias, key_type="ec-p256", mr_enclave=MR) for _ in range(args.sessions)
    ]
    result: dict[str, Any] = {
        "benchmark": "dashboard",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.platform()}",
        "python": platform.python_version(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "sessions": args.sessions,
        "refresh_s": args.refresh,
        "traffic_pps": args.pps,
    }
    with tempfile.TemporaryDirectory() as tmp, topology() as topo:
        site = Site(topo, Path(tmp), ias)
        subnet_id = site.add_subnet(SUBNET, "bench")
        site.allow("bench", MR, subnet_id=subnet_id)
        site.start()
        t0 = time.perf_counter()
        addresses, handles = connect_all(site, minted, args.processes)
        result["setup_s"] = round(time.perf_counter() - t0, 1)
        if len(addresses) != args.sessions:
            raise RuntimeError(f"only {len(addresses)} of {args.sessions} enclaves set up")
        targets = ",".join(addresses)
        traffic = topo.spawn(site.up, [sys.executable, "-c", TRAFFIC, targets, str(args.pps)])
        assert site.socket_path is not None
        socket_path = site.socket_path
        try:
            time.sleep(2)
            rpc: list[float] = []
            thread = threading.Thread(
                target=lambda: rpc.extend(asyncio.run(rpc_round_trips(socket_path, 20)))
            )
            thread.start()
            thread.join()
            result["rpc_sessions_list"] = summary(rpc)
            result["runs"] = [
                asyncio.run(measure(socket_path, args.sessions, size, args.seconds, args.refresh))
                for size in ((80, 24), (200, 60))
            ]
            result["sengd_rss_mb"] = round(site.rss_kb() / 1024, 1)
        finally:
            traffic.kill()
            traffic.wait(5)
            close_all(handles)
            site.stop(timeout=30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print()
    print("| terminal | ready | update (state + table) p50/p95 | frame p50/p95 | key p50/p95 |")
    print("|---|---|---|---|---|")
    for run in result["runs"]:
        state, table = run["update_state"], run["update_table"]
        print(
            f"| {run['terminal']} | {run['ready_s']} s | {state.get('p50_ms')} + "
            f"{table.get('p50_ms')} / {state.get('p95_ms')} + {table.get('p95_ms')} ms | "
            f"{run['frame'].get('p50_ms')} / {run['frame'].get('p95_ms')} ms | "
            f"{run['key'].get('p50_ms')} / {run['key'].get('p95_ms')} ms |"
        )


if __name__ == "__main__":
    main()
