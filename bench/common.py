"""What every benchmark shares: machine and commit stamps, server CPU from /proc, result files.

Server CPU is the kernel's accounting of the daemon: utime + stime of the sengd process and of
every process below it (/proc/PID/stat, all threads included), never wall time.

`write_results(name, result, rows, plots)` writes bench/results/NAME.json (the raw result with
the machine and commit), NAME.md (a Markdown table) and one PNG per plot.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """CPU model and count, kernel, Python and crypto library versions."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    from cryptography import __version__ as cryptography_version
    from mbedtls import version as mbedtls_version
    from OpenSSL import SSL

    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mbedtls": mbedtls_version.version,
        "openssl": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode(),
        "cryptography": cryptography_version,
    }


def commit() -> str:
    """Short commit id of the checkout, with "+dirty" if tracked files under sengd/ changed."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "sengd"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout.strip()
    return head + ("+dirty" if dirty else "")


def _stat(pid: int) -> tuple[int, float]:
    """(parent pid, utime + stime in seconds) of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of `root` and all its live descendants."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parents[int(entry)], cpu[int(entry)] = _stat(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total = 0.0
    for pid, seconds in cpu.items():
        p = pid
        while p > 1:
            if p == root:
                total += seconds
                break
            p = parents.get(p, 0)
    return total


def system_busy_seconds() -> float:
    """CPU seconds spent non-idle by all CPUs since boot (/proc/stat: all but idle, iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """Resident memory of `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


Plot = Callable[[Any], None]
"""Draws on a matplotlib Axes."""


def write_results(
    name: str,
    result: dict[str, Any],
    rows: Sequence[Sequence[object]],
    header: Sequence[str],
    plots: dict[str, Plot] | None = None,
    notes: str = "",
) -> None:
    """Write NAME.json, NAME.md (header + rows as a table, then `notes`) and NAME-*.png."""
    stamped = {"benchmark": name, "commit": commit(), "machine": machine(), **result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(stamped, indent=2) + "\n")
    lines = [
        f"# {name}",
        "",
        f"commit {stamped['commit']}; {stamped['machine']['cpu']}, "
        f"{stamped['machine']['cpu_count']} CPUs, Linux {stamped['machine']['kernel']}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    if notes:
        lines += ["", notes.strip()]
    table = "\n".join(lines) + "\n"
    (RESULTS / f"{name}.md").write_text(table)
    print(table)
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for suffix, draw in plots.items():
            fig, ax = plt.subplots(figsize=(7, 4))
            draw(ax)
            ax.set_title(f"{name}: {suffix} ({stamped['commit']})", fontsize=9)
            fig.tight_layout()
            fig.savefig(RESULTS / f"{name}-{suffix}.png", dpi=100)
            plt.close(fig)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)
