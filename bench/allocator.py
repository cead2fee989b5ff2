"""Benchmark: lease every address of a /16 one by one, release them all, lease them all again.

    .venv/bin/python bench/allocator.py [--prefix 16] [--postgresql auto|URL] [--out FILE]

Each operation is one committed transaction, exactly as the daemon does it (`Allocator.lease`
/ `Allocator.release`), timed individually with `perf_counter_ns`. The in-memory index is warm
(built by `Allocator.start()` before timing starts; the start-up time is reported separately,
once on the empty subnet and once with the whole /16 in the lease history).

SQLite runs on a fresh file in a temporary directory with the store's settings (WAL,
synchronous=NORMAL). `--postgresql auto` also runs on a private throw-away PostgreSQL server
(the test suite's fixture, needs root and Debian's postgresql package); `--postgresql URL`
uses an existing empty database.

Results go to bench/results/allocator.json (and a summary to stdout).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sengd.store.allocator import Allocator, EndReason  # noqa: E402
from sengd.store.db import create_store_engine, migrate  # noqa: E402
from sengd.store.subnets import add_enclave_subnet  # noqa: E402

MR_ENCLAVE = bytes(range(32))
MR_SIGNER = bytes(range(32, 64))
HOST = IPv4Address("198.51.100.7")


def summarize(samples_ns: list[int]) -> dict[str, float]:
    """Mean, median, p99 and max in microseconds, and the total in seconds."""
    ordered = sorted(samples_ns)
    return {
        "count": len(ordered),
        "mean_us": round(statistics.fmean(ordered) / 1000, 1),
        "median_us": round(ordered[len(ordered) // 2] / 1000, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99)] / 1000, 1),
        "max_us": round(ordered[-1] / 1000, 1),
        "total_s": round(sum(ordered) / 1e9, 2),
    }


def run(url: str, prefix: int) -> dict[str, Any]:
    """The benchmark on one database URL (which must be empty)."""
    engine = create_store_engine(url)
    migrate(engine)
    network = IPv4Network(f"10.0.0.0/{prefix}")
    with Session(engine) as session:
        subnet_id = add_enclave_subnet(session, network, name="bench").id
        session.commit()

    def lease_all(allocator: Allocator) -> tuple[list[int], list[int]]:
        times, lease_ids = [], []
        for _ in range(network.num_addresses - 3):
            started = time.perf_counter_ns()
            grant = allocator.lease(
                subnet_id,
                mr_enclave=MR_ENCLAVE,
                mr_signer=MR_SIGNER,
                host_address=HOST,
                host_port=4433,
            )
            times.append(time.perf_counter_ns() - started)
            lease_ids.append(grant.lease_id)
        return times, lease_ids

    def release_all(allocator: Allocator, lease_ids: list[int]) -> list[int]:
        times = []
        for lease_id in lease_ids:
            started = time.perf_counter_ns()
            allocator.release(lease_id, EndReason.CLOSED)
            times.append(time.perf_counter_ns() - started)
        return times

    allocator = Allocator(engine, "bench")
    started = time.perf_counter()
    allocator.start()
    start_empty = time.perf_counter() - started
    fresh_times, lease_ids = lease_all(allocator)
    release_times = release_all(allocator, lease_ids)
    allocator.close()

    allocator = Allocator(engine, "bench")  # a restart: the index is rebuilt from history
    started = time.perf_counter()
    allocator.start()
    start_full = time.perf_counter() - started
    reuse_times, lease_ids = lease_all(allocator)
    release_all(allocator, lease_ids)
    allocator.close()
    engine.dispose()
    return {
        "subnet": str(network),
        "assignable": network.num_addresses - 3,
        "start_empty_s": round(start_empty, 3),
        "start_with_full_history_s": round(start_full, 3),
        "lease_fresh": summarize(fresh_times),
        "release": summarize(release_times),
        "lease_reused_lru": summarize(reuse_times),
    }


@contextlib.contextmanager
def postgresql(option: str) -> Iterator[str]:
    """A database URL for `--postgresql`: a private server for "auto", else `option` itself."""
    if option != "auto":
        yield option
        return
    from tests.integration.store.pg import private_postgres

    with private_postgres() as server:
        name = server.create_database()
        try:
            yield server.url(name)
        finally:
            server.drop_database(name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prefix", type=int, default=16, help="subnet prefix length (16)")
    parser.add_argument("--postgresql", metavar="auto|URL", help="also run on PostgreSQL")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "allocator.json")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "benchmark": "bench/allocator.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
            "sqlalchemy": sqlalchemy.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "method": "one committed transaction per operation, each timed with perf_counter_ns; "
        "in-memory index warm (start-up timed separately)",
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="seng-bench-") as tmp:
        results["backends"]["sqlite"] = run(f"sqlite:///{tmp}/bench.db", args.prefix)
    if args.postgresql:
        with postgresql(args.postgresql) as url:
            results["backends"]["postgresql"] = run(url, args.prefix)
        if args.postgresql == "auto":
            results["backends"]["postgresql"]["server"] = (
                "private PostgreSQL on loopback TCP with the test suite's settings (fsync=off, "
                "synchronous_commit=off): measures round trips and locking, not disk flushes"
            )
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for backend, figures in results["backends"].items():
        fresh, reuse, release = (
            figures["lease_fresh"],
            figures["lease_reused_lru"],
            figures["release"],
        )
        print(
            f"{backend}: {figures['assignable']} leases of {figures['subnet']}: fresh mean "
            f"{fresh['mean_us']} us (median {fresh['median_us']}, p99 {fresh['p99_us']}); "
            f"reused mean {reuse['mean_us']} us; release mean {release['mean_us']} us; "
            f"start {figures['start_empty_s']} s empty, {figures['start_with_full_history_s']} s "
            "with full history"
        )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
