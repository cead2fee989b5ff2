"""Real network namespaces and veth links for integration tests (root only).

Every name carries a per-run token so parallel or crashed runs never collide, and `Topology`
removes everything it made (processes first, then namespaces) even when the test fails.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

_counter = itertools.count()
RUN_TOKEN = secrets.token_hex(2)


def require_root() -> None:
    """Fail loudly (not skip) when the tests cannot create namespaces."""
    if os.geteuid() != 0:
        raise RuntimeError("integration tests need root (network namespaces, TUN, nftables)")


def unique(prefix: str) -> str:
    """A name <= 15 characters (interface limit) unique to this run."""
    return f"{prefix}{RUN_TOKEN}{next(_counter)}"[:15]


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command, raising with its stderr on failure."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass
class Netns:
    """One network namespace made by a test."""

    name: str

    def exec_args(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return sh(*self.exec_args(*args), check=check, timeout=timeout)

    def popen(self, args: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(self.exec_args(*args), text=True, **kwargs)  # type: ignore[call-overload]


@dataclass
class Topology:
    """Namespaces, links and processes owned by one test; `close()` removes all of them."""

    namespaces: list[Netns] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def netns(self, role: str) -> Netns:
        ns = Netns(unique(f"sg{role[:3]}"))
        sh("ip", "netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def link(self, a: Netns, addr_a: str, b: Netns, addr_b: str) -> tuple[str, str]:
        """A veth pair between `a` and `b` with the given CIDR addresses, both ends up."""
        if_a, if_b = unique("va"), unique("vb")
        sh(
            "ip",
            "link",
            "add",
            if_a,
            "netns",
            a.name,
            "type",
            "veth",
            "peer",
            if_b,
            "netns",
            b.name,
        )
        a.run("ip", "addr", "add", addr_a, "dev", if_a)
        b.run("ip", "addr", "add", addr_b, "dev", if_b)
        a.run("ip", "link", "set", if_a, "up")
        b.run("ip", "link", "set", if_b, "up")
        return if_a, if_b

    def spawn(self, ns: Netns, args: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        proc = ns.popen(args, **kwargs)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        for ns in reversed(self.namespaces):
            pids = sh("ip", "netns", "pids", ns.name, check=False).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            deadline = time.monotonic() + 5
            while sh("ip", "netns", "del", ns.name, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot delete namespace {ns.name}")
                time.sleep(0.1)


@contextmanager
def topology() -> Iterator[Topology]:
    """A fresh `Topology`, always cleaned up."""
    require_root()
    topo = Topology()
    try:
        yield topo
    finally:
        topo.close()


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


@contextmanager
def in_netns(ns: Netns) -> Iterator[None]:
    """Run the body with the calling thread in namespace `ns` (sockets made there stay there)."""
    with (
        open("/proc/thread-self/ns/net", "rb") as home,
        open(f"/run/netns/{ns.name}", "rb") as target,
    ):
        if _libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({ns.name}) failed")
        try:
            yield
        finally:
            if _libc.setns(home.fileno(), _CLONE_NEWNET) != 0:  # pragma: no cover
                raise OSError(ctypes.get_errno(), "cannot return to the original namespace")
