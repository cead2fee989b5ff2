"""Handshake workers end to end: real sengd, real worker processes, real DTLS, root only.

What must hold: handshakes run in the workers (sengd's children) and the enclaves they hand
over forward like any other; a worker that dies is replaced while established enclaves keep
forwarding, its handshakes in flight end with `worker-lost`, and new enclaves get in again;
`handshake_workers = 0` runs handshakes in sengd itself; an established enclave's packets are
not held up while other enclaves set up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sengadm.client import Client
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from sengd.testing.enclave_emu import EnclaveEmulator
from tests.integration.site import Site

pytestmark = pytest.mark.integration

MR_A = bytes.fromhex("a1" * 32)


def children(pid: int) -> list[int]:
    """Child processes of `pid` (all threads' children)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return sorted(found)


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def status(site: Site) -> dict[str, object]:
    assert site.socket_path is not None
    answer = Client(site.socket_path, timeout=10).call("status")
    assert isinstance(answer, dict)
    return answer


def start(site: Site, workers: int | str) -> None:
    value = f'"{workers}"' if isinstance(workers, str) else str(workers)
    site.write_config(tunnel=f"handshake_workers = {value}")
    site.allow("demo", MR_A)
    site.start()


def test_handshakes_run_in_the_workers_and_enclaves_forward(site: Site, ias: TestIas) -> None:
    start(site, 2)
    assert site.process is not None
    workers = children(site.process.pid)
    assert len(workers) == 2, workers
    assert all("sengd.dataplane.hsworker" in cmdline(pid) for pid in workers)
    assert "event=handshake-workers count=2" in site.log_text()
    emus = [
        site.emulator(mint_ratls_certificate(ias, key_type=kind, mr_enclave=MR_A))
        for kind in ("ec-p384", "rsa-2048", "ec-p384", "ec-p384")
    ]
    addresses = {str(site.connect(emu).ip) for emu in emus}
    assert len(addresses) == len(emus)
    for ident, emu in enumerate(emus, 1):
        assert site.ping_upstream(emu, ident=ident)
    answer = status(site)
    reported = answer["handshake_workers"]
    assert isinstance(reported, list)
    assert [w["pid"] for w in reported] == workers
    assert all(w["alive"] and w["restarts"] == 0 for w in reported)
    # Each enclave is two handoffs (tunnel #1 and #2), spread over the workers by address.
    assert sum(w["handoffs"] for w in reported) == 2 * len(emus)
    assert answer["pending_handshakes"] == 0
    for emu in emus:
        emu.close()


def test_a_killed_worker_is_replaced_and_nobody_else_notices(site: Site, ias: TestIas) -> None:
    start(site, 1)
    assert site.process is not None
    established = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(established)
    # A handshake in flight when the worker dies: tunnel #1 of this one never finishes.
    stuck = site.emulator(
        mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A), timeout=3.0
    )
    offset = len(site.log_text())
    (worker,) = children(site.process.pid)
    stuck_thread = threading.Thread(target=lambda: _try_connect(site, stuck), daemon=True)
    stuck_thread.start()
    time.sleep(0.3)
    os.kill(worker, signal.SIGKILL)
    site.wait_log("event=handshake-worker-lost", offset=offset)
    site.wait_log("event=handshake-worker-restarted", offset=offset)
    assert site.ping_upstream(established, ident=3), "an established enclave lost its tunnel"
    (replacement,) = children(site.process.pid)
    assert replacement != worker
    newcomer = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(newcomer)
    assert site.ping_upstream(newcomer, ident=4)
    reported = status(site)["handshake_workers"]
    assert isinstance(reported, list)
    assert reported[0]["restarts"] == 1 and reported[0]["alive"]
    stuck_thread.join(10)
    assert site.process.poll() is None
    for emu in (established, newcomer, stuck):
        emu.close()


def _try_connect(site: Site, emu: EnclaveEmulator) -> None:
    with contextlib.suppress(Exception):  # the point is that this one may fail
        site.connect(emu)


def test_zero_workers_run_handshakes_in_sengd(site: Site, ias: TestIas) -> None:
    start(site, 0)
    assert site.process is not None
    assert children(site.process.pid) == []
    assert "handshake-workers" not in site.log_text()
    emu = site.emulator(mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR_A))
    site.connect(emu)
    assert site.ping_upstream(emu)
    assert status(site)["handshake_workers"] == []
    emu.close()


def test_workers_end_with_sengd(site: Site, ias: TestIas) -> None:
    start(site, "auto")
    assert site.process is not None
    workers = children(site.process.pid)
    assert len(workers) >= 1
    assert site.stop(timeout=10) == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}/cmdline").exists() for p in workers)


def test_a_worker_dies_with_a_killed_sengd(site: Site, ias: TestIas) -> None:
    start(site, 1)
    assert site.process is not None
    (worker,) = children(site.process.pid)
    site.process.kill()
    site.process.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{worker}/cmdline").exists():
        time.sleep(0.05)
    # The parent-death signal ended it (a zombie has an empty cmdline until reaped by init).
    assert (
        not Path(f"/proc/{worker}/cmdline").exists()
        or not Path(f"/proc/{worker}/cmdline").read_bytes()
    )


MDWE = """
import ctypes
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0
"""


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-2048"])
def test_handshakes_work_without_writable_executable_memory(
    site: Site, ias: TestIas, key_type: str
) -> None:
    """The packaged unit has MemoryDenyWriteExecute=yes: the kernel's MDWE (inherited by the
    workers) refuses cffi's callbacks, so a worker relying on them would die at its first
    handshake. Needs Linux >= 6.3 (PR_SET_MDWE); fails loudly without."""
    site.write_config(tunnel='handshake_workers = 1\nhandshake_engine = "openssl"')
    site.allow("demo", MR_A)
    site.start(python_prelude=MDWE)
    assert site.process is not None
    (worker,) = children(site.process.pid)
    assert "MDWE" not in site.log_text()
    emu = site.emulator(mint_ratls_certificate(ias, key_type=key_type, mr_enclave=MR_A))
    site.connect(emu)
    assert site.ping_upstream(emu)
    assert children(site.process.pid) == [worker], "the worker died and was replaced"
    emu.close()
