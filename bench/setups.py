"""Attested double-tunnel setups: rate and server CPU, a reconnect storm, enclaves per box.

Method: a site in namespaces (tests/integration/site.py) with sengd on the gateway. Emulated
enclaves (pyOpenSSL, ECDSA P-384 RA-TLS certificates minted by the test IAS, each unique) run
in spawned client processes on the enclave host; each performs the full SENG sequence
(handshake #1 with attestation, IpAssignment, ACK, handshake #2 with attestation, pairing).
Server CPU = utime + stime of the sengd process tree from /proc, never wall time.

- rate:  setups/s and server CPU per setup at 1, 16 and 128 concurrent enclaves
         (`--setups` each, after a warm-up).
- storm: the gateway is restarted, one probe enclave connects, then `--storm` enclaves set up
         at once (`--concurrency` in flight); reports the time until all are up and the probe's
         ICMP RTT through its tunnels during the storm vs idle.
- scale: `--enclaves` enclaves set up and held; reports sengd's resident memory per enclave
         (RSS growth / enclaves) and the probe's RTT with all of them established.

Run as root:  .venv/bin/python -m bench.setups rate|storm|scale [options]
Writes bench/results/setups-<command>.{json,md} (storm with --isolate-forwarding:
setups-storm-isolated.{json,md}).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import median, percentile, process_tree_cpu, rss_kb, write_results
from bench.setup_stall import rtts
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from tests.integration.netns import topology
from tests.integration.site import Site

MR = bytes.fromhex("c3" * 32)


def client_worker(
    netns: str,
    pins: dict[str, bytes],
    certs: list[tuple[bytes, bytes]],
    concurrency: int,
    conn: Any,
) -> None:
    """Spawned: set up one enclave per certificate with `concurrency` threads, report
    ("done", wall seconds, per-setup seconds, failures) on `conn`, then hold every enclave
    until anything arrives on `conn`."""
    import resource

    from sengd.testing.enclave_emu import ClientIdentity, EnclaveEmulator
    from tests.integration.netns import Netns, in_netns
    from tests.integration.site import GW_ADDR, PORT

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ns = Netns(netns)
    queue = list(certs)
    lock = threading.Lock()
    held: list[Any] = []
    latencies: list[float] = []
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                cert, key = queue.pop()
            started = time.perf_counter()
            try:
                with in_netns(ns):
                    emu = EnclaveEmulator(
                        (GW_ADDR, PORT),
                        ClientIdentity.from_bytes(cert, key),
                        pinned_server_cert=pins["ecdsa"],
                        timeout=60,
                    )
                    emu.connect()
            except Exception as exc:
                with lock:
                    failures.append(repr(exc)[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - started)
                held.append(emu)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conn.send(("done", time.perf_counter() - started, latencies, failures))
    conn.recv()
    for emu in held:
        emu.close()


class Clients:
    """Client processes holding enclaves; `run()` blocks until their setups are done."""

    def __init__(self, site: Site, nice: int = 0) -> None:
        self.site = site
        self.nice = nice
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[tuple[Any, Any]] = []

    def start(self, certs: list[tuple[bytes, bytes]], concurrency: int, processes: int) -> None:
        per = (len(certs) + processes - 1) // processes
        for index in range(processes):
            part = certs[index * per : (index + 1) * per]
            if not part:
                continue
            ours, theirs = self.ctx.Pipe()
            proc = self.ctx.Process(
                target=client_worker,
                args=(
                    self.site.eh.name,
                    self.site.pins,
                    part,
                    max(1, concurrency // processes),
                    theirs,
                ),
            )
            proc.start()
            if self.nice:
                os.setpriority(os.PRIO_PROCESS, proc.pid, self.nice)
            self.procs.append((proc, ours))

    def wait(self) -> dict[str, Any]:
        walls, latencies, failures = [], [], []
        for _, conn in self.procs:
            _, wall, lat, fail = conn.recv()
            walls.append(wall)
            latencies += lat
            failures += fail
        return {"wall": max(walls), "latencies": latencies, "failures": failures}

    def release(self) -> None:
        for proc, conn in self.procs:
            conn.send("stop")
            proc.join(timeout=120)
            if proc.is_alive():
                proc.kill()
        self.procs.clear()


def client_processes(enclaves: int) -> int:
    """Client processes for `enclaves`: the emulator waits with select(), which cannot watch
    descriptors above 1023, and every enclave holds two sockets."""
    return max(2, -(-enclaves // 400))


def mint(ias: TestIas, count: int) -> list[tuple[bytes, bytes]]:
    minted = [mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR) for _ in range(count)]
    return [(m.cert_pem, m.key_pem) for m in minted]


@contextmanager
def running_site(
    extra_config: str = "", workers: str = "auto", engine: str = "openssl"
) -> Iterator[tuple[Site, TestIas]]:
    ias = TestIas.create()
    with tempfile.TemporaryDirectory() as tmp, topology() as topo:
        site = Site(topo, Path(tmp), ias)
        site.write_config(
            "[limits]\nmax_sessions = 20000\nmax_pending_handshakes = 4096\n"
            "max_pending_handshakes_per_host = 4096\n" + extra_config,
            tunnel=f'handshake_workers = {_workers_value(workers)}\nhandshake_engine = "{engine}"',
        )
        site.add_subnet("172.16.0.0/14", "bench")
        site.allow("bench", MR)
        site.start()
        try:
            yield site, ias
        finally:
            if site.process is not None and site.process.poll() is None:
                site.stop(timeout=120)


FORWARDING_CPUS = {0}
OTHER_CPUS = {1}


def isolate_forwarding(pid: int) -> None:
    """Pin sengd's forwarding process and this process (the probe) to CPU 0, sengd's
    handshake workers and the emulated enclaves (`Clients`) to CPU 1: the storm's clients then
    stand for enclaves on other machines, and the probe measures the gateway, not its own
    wait for a CPU."""
    os.sched_setaffinity(pid, FORWARDING_CPUS)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        os.sched_setaffinity(int(child), OTHER_CPUS)
    os.sched_setaffinity(0, FORWARDING_CPUS)


def _workers_value(workers: str) -> str:
    return workers if workers.isdigit() else f'"{workers}"'


def probe_rtt(site: Site, ias: TestIas) -> Any:
    probe = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR))
    site.connect(probe)
    return probe


def rtt_summary(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50_ms": round(median(samples), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
        "max_ms": round(max(samples), 3),
    }


def cmd_rate(args: argparse.Namespace) -> None:
    results = []
    with running_site(workers=args.workers, engine=args.engine) as (site, ias):
        assert site.process is not None
        pid = site.process.pid
        clients = Clients(site)
        clients.start(mint(ias, 8), 4, 1)  # warm-up (caches, allocator)
        clients.wait()
        clients.release()
        for concurrency in args.concurrency:
            runs = []
            for _ in range(args.repeats):
                certs = mint(ias, max(args.setups, concurrency))
                cpu0 = process_tree_cpu(pid)
                clients.start(certs, concurrency, min(2, concurrency))
                out = clients.wait()
                cpu = process_tree_cpu(pid) - cpu0
                clients.release()
                done = len(out["latencies"])
                runs.append(
                    {
                        "setups": done,
                        "failures": len(out["failures"]),
                        "wall_s": out["wall"],
                        "setups_per_s": done / out["wall"],
                        "server_cpu_ms_per_setup": cpu * 1000 / max(1, done),
                        "latency_p50_ms": median(out["latencies"]) * 1000,
                    }
                )
            row = {"concurrency": concurrency, "runs": runs}
            for key in ("setups_per_s", "server_cpu_ms_per_setup", "latency_p50_ms"):
                row[key] = median([r[key] for r in runs])
            row["failures"] = sum(r["failures"] for r in runs)
            print(row, flush=True)
            results.append(row)
    write_results(
        "setups-rate",
        {"method": __doc__, "args": vars(args) | {"func": None}, "results": results},
        [
            (
                r["concurrency"],
                r["setups_per_s"],
                r["server_cpu_ms_per_setup"],
                r["latency_p50_ms"],
                r["failures"],
            )
            for r in results
        ],
        ("concurrent enclaves", "setups/s", "server CPU ms/setup", "setup latency p50 ms", "fail"),
        notes=f"Median of {args.repeats} runs of {args.setups} setups (ECDSA P-384, unique "
        "RA-TLS certificates, both tunnels attested).",
    )


def storm_once(args: argparse.Namespace) -> dict[str, Any]:
    """One storm: a fresh site, a restart, `--storm` enclaves at once; figures of that run."""
    with running_site(workers=args.workers, engine=args.engine) as (site, ias):
        assert site.process is not None
        certs = mint(ias, args.storm)
        site.stop(timeout=60)
        site.start()  # the restart: every enclave comes back at once
        pid = site.process.pid
        if args.isolate_forwarding:
            isolate_forwarding(pid)
        probe = probe_rtt(site, ias)
        idle: list[float] = []
        rtts(probe, threading.Event(), idle, 300, pace=0.002)
        clients = Clients(site, args.client_nice)
        stop = threading.Event()
        busy: list[float] = []
        pinger = threading.Thread(target=rtts, args=(probe, stop, busy, 10**9, None, 0.002))
        cpu0 = process_tree_cpu(pid)
        pinger.start()
        if args.isolate_forwarding:
            os.sched_setaffinity(0, OTHER_CPUS)  # inherited by the client processes
        clients.start(certs, args.concurrency, client_processes(len(certs)))
        if args.isolate_forwarding:
            os.sched_setaffinity(0, FORWARDING_CPUS)
        out = clients.wait()
        stop.set()
        pinger.join()
        cpu = process_tree_cpu(pid) - cpu0
        rss = rss_kb(pid)
        clients.release()
        probe.close()
    if args.isolate_forwarding:
        os.sched_setaffinity(0, FORWARDING_CPUS | OTHER_CPUS)
    done = len(out["latencies"])
    return {
        "completed": done,
        "failures": out["failures"][:20],
        "storm_wall_s": out["wall"],
        "server_cpu_s": cpu,
        "server_cpu_ms_per_setup": cpu * 1000 / max(1, done),
        "rss_kb_after": rss,
        "rtt_idle": rtt_summary(idle),
        "rtt_during_storm": rtt_summary(busy),
    }


def cmd_storm(args: argparse.Namespace) -> None:
    runs = []
    for _ in range(args.repeats):
        runs.append(storm_once(args))
        print(runs[-1], flush=True)

    def mid(get: Any) -> float:
        return median([get(r) for r in runs])

    result = {
        "method": __doc__,
        "args": vars(args) | {"func": None},
        "enclaves": args.storm,
        "runs": runs,
        "completed_min": min(r["completed"] for r in runs),
        "storm_wall_s": mid(lambda r: r["storm_wall_s"]),
        "server_cpu_ms_per_setup": mid(lambda r: r["server_cpu_ms_per_setup"]),
        "rtt_idle_p50_ms": mid(lambda r: r["rtt_idle"]["p50_ms"]),
        "rtt_idle_p99_ms": mid(lambda r: r["rtt_idle"]["p99_ms"]),
        "rtt_storm_p50_ms": mid(lambda r: r["rtt_during_storm"]["p50_ms"]),
        "rtt_storm_p99_ms": mid(lambda r: r["rtt_during_storm"]["p99_ms"]),
    }
    placement = (
        "sengd's forwarding process and the probe on CPU 0, its handshake workers and the "
        "emulated enclaves on CPU 1"
        if args.isolate_forwarding
        else "sengd, its workers and the emulated enclaves sharing both CPUs"
    )
    write_results(
        "setups-storm-isolated" if args.isolate_forwarding else "setups-storm",
        result,
        [
            (
                "enclaves set up after restart (worst run)",
                f"{result['completed_min']} of {args.storm}",
            ),
            ("time until all were up", f"{result['storm_wall_s']:.2f} s"),
            ("server CPU per setup", f"{result['server_cpu_ms_per_setup']:.2f} ms"),
            (
                "probe RTT idle p50 / p99",
                f"{result['rtt_idle_p50_ms']:.3f} / {result['rtt_idle_p99_ms']:.3f} ms",
            ),
            (
                "probe RTT during the storm p50 / p99",
                f"{result['rtt_storm_p50_ms']:.3f} / {result['rtt_storm_p99_ms']:.3f} ms",
            ),
        ],
        ("measurement", "value"),
        notes=f"Median of {args.repeats} runs. {args.concurrency} setups in flight from "
        f"{client_processes(args.storm)} client processes (niceness {args.client_nice}); "
        f"{placement}. handshake_workers={args.workers}, handshake_engine={args.engine}.",
    )


def _rtt(summary: dict[str, float]) -> str:
    if not summary.get("n"):
        return "no samples"
    return f"{summary['p50_ms']} / {summary['p99_ms']} ms (n={summary['n']})"


def cmd_scale(args: argparse.Namespace) -> None:
    with running_site(workers=args.workers, engine=args.engine) as (site, ias):
        assert site.process is not None
        pid = site.process.pid
        probe = probe_rtt(site, ias)
        idle: list[float] = []
        rtts(probe, threading.Event(), idle, 300, pace=0.002)
        certs = mint(ias, args.enclaves)
        rss0 = rss_kb(pid)
        clients = Clients(site)
        clients.start(certs, args.concurrency, client_processes(len(certs)))
        out = clients.wait()
        time.sleep(1)
        rss1 = rss_kb(pid)
        loaded: list[float] = []
        rtts(probe, threading.Event(), loaded, 300, pace=0.002)
        clients.release()
        probe.close()
    done = len(out["latencies"])
    result = {
        "method": __doc__,
        "args": vars(args) | {"func": None},
        "enclaves": done,
        "failures": out["failures"][:20],
        "rss_kb_before": rss0,
        "rss_kb_after": rss1,
        "rss_kb_per_enclave": (rss1 - rss0) / max(1, done),
        "rtt_before": rtt_summary(idle),
        "rtt_with_all_established": rtt_summary(loaded),
    }
    write_results(
        "setups-scale",
        result,
        [
            ("enclaves established and held", f"{done} ({len(out['failures'])} failed)"),
            ("sengd RSS before / after", f"{rss0} / {rss1} KiB"),
            ("RSS per enclave (two DTLS sessions)", f"{result['rss_kb_per_enclave']:.1f} KiB"),
            ("probe RTT before p50 / p99", _rtt(result["rtt_before"])),
            ("probe RTT with all established p50 / p99", _rtt(result["rtt_with_all_established"])),
        ],
        ("measurement", "value"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True)
    rate = sub.add_parser("rate")
    rate.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 128])
    rate.add_argument("--setups", type=int, default=64)
    rate.add_argument("--repeats", type=int, default=3)
    rate.set_defaults(func=cmd_rate)
    storm = sub.add_parser("storm")
    storm.add_argument("--storm", type=int, default=1000)
    storm.add_argument("--concurrency", type=int, default=128)
    storm.add_argument("--repeats", type=int, default=3)
    storm.add_argument(
        "--isolate-forwarding",
        action="store_true",
        help="sengd's forwarding process alone on CPU 0, everything else on CPU 1",
    )
    storm.set_defaults(func=cmd_storm)
    scale = sub.add_parser("scale")
    scale.add_argument("--enclaves", type=int, default=2000)
    scale.add_argument("--concurrency", type=int, default=64)
    scale.set_defaults(func=cmd_scale)
    for command in (rate, storm, scale):
        command.add_argument(
            "--workers", default="auto", help='tunnel.handshake_workers ("auto" or a count)'
        )
        command.add_argument("--engine", default="openssl", choices=["openssl", "mbedtls"])
        command.add_argument(
            "--client-nice",
            type=int,
            default=0,
            help="niceness of the emulated enclaves' processes (they share sengd's CPUs here; "
            "on a real site they run elsewhere)",
        )
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
