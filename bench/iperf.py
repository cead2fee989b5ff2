"""iperf3 TCP through the gateway, with the emulated enclave's TUN as the client's interface.

Method: a site in namespaces (tests/integration/site.py). The enclave emulator's CLI runs on
the enclave host with its own TUN (`--tun`), so the kernel's TCP on the enclave host talks to
`iperf3 -s` on the upstream host through both DTLS tunnels and sengd. `iperf3 -c` runs for
`--seconds`, once per direction (`-R`: upstream -> enclave), `--repeats` times; the figure is
the median of the received bit rate. CPU shares (utime + stime from /proc over the run) show
which process limits the rate: sengd, or the emulator, which is a single Python process doing
OpenSSL records and TUN I/O and is much slower per packet than sengd.

With `--fast-records` the emulator protects the tunnel records with keys exported from its
OpenSSL sessions and `cryptography`'s AES-GCM (as sengd does) instead of pyOpenSSL's memory
BIOs; `--isolate-forwarding` gives sengd's forwarding process CPU 0 and everything else CPU 1.

Run as root:  .venv/bin/python -m bench.iperf [--seconds 5] [--repeats 3] [--fast-records]
              [--isolate-forwarding]
Writes bench/results/iperf[-fast][-isolated].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, process_tree_cpu, write_results
from bench.forward import isolate
from sengd.testing.attestation_kit import TestIas, mint_ratls_certificate
from tests.integration.netns import topology
from tests.integration.site import GW_ADDR, PORT, UP_ADDR, Site, env_with_repo

MR = bytes.fromhex("d4" * 32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--tun-mtu", type=int, default=1420, help="the emulator's TUN MTU (Runtime 1420, SDK 1432)"
    )
    parser.add_argument("--streams", type=int, default=1, help="parallel TCP streams (-P)")
    parser.add_argument(
        "--fast-records",
        action="store_true",
        help="the emulator protects records with exported keys (enclave_emu --fast-records)",
    )
    parser.add_argument(
        "--isolate-forwarding",
        action="store_true",
        help="sengd's forwarding process alone on CPU 0; the emulator, iperf3 and the workers "
        "on CPU 1",
    )
    args = parser.parse_args()
    ias = TestIas.create()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, topology() as topo:
        site = Site(topo, Path(tmp), ias)
        site.allow("bench", MR)
        site.start()
        assert site.process is not None
        if args.isolate_forwarding:
            isolate(site.process.pid)  # and this process: the emulator and iperf3 inherit it
        minted = mint_ratls_certificate(ias, key_type="ec-p384", mr_enclave=MR)
        w = site.workdir
        (w / "c.pem").write_bytes(minted.cert_pem)
        (w / "c.key").write_bytes(minted.key_pem)
        (w / "pin.der").write_bytes(site.pins["ecdsa"])
        emu = site.topo.spawn(
            site.eh,
            [
                sys.executable,
                "-m",
                "sengd.testing.enclave_emu",
                "--server",
                f"{GW_ADDR}:{PORT}",
                "--cert",
                str(w / "c.pem"),
                "--key",
                str(w / "c.key"),
                "--pin",
                str(w / "pin.der"),
                "--tun",
                "tunB",
                "--route",
                "10.200.2.0/24",
                *(["--fast-records"] if args.fast_records else []),
                "--tun-mtu",
                str(args.tun_mtu),
            ],
            stdout=subprocess.PIPE,
            env=env_with_repo(),
        )
        assert emu.stdout is not None
        up = emu.stdout.readline()
        if '"event": "up"' not in up:
            raise RuntimeError(f"emulator did not come up: {up}")
        site.wait_log("event=session-up")
        for reverse in (False, True):
            for _ in range(args.repeats):
                server = site.topo.spawn(site.up, ["iperf3", "-s", "-B", UP_ADDR, "-1"])
                time.sleep(0.3)
                cpu_gw0, cpu_emu0 = process_tree_cpu(site.process.pid), process_tree_cpu(emu.pid)
                cmd = ["iperf3", "-c", UP_ADDR, "-t", str(args.seconds), "-P", str(args.streams)]
                cmd.append("-J")
                out = site.eh.run(*cmd, *(["-R"] if reverse else []), timeout=args.seconds + 30)
                cpu_gw = process_tree_cpu(site.process.pid) - cpu_gw0
                cpu_emu = process_tree_cpu(emu.pid) - cpu_emu0
                server.wait(timeout=10)
                end = json.loads(out.stdout)["end"]
                runs.append(
                    {
                        "direction": "gateway->enclave" if reverse else "enclave->gateway",
                        "received_mbit_s": end["sum_received"]["bits_per_second"] / 1e6,
                        "retransmits": end["sum_sent"].get("retransmits"),
                        "sengd_cpu_share": cpu_gw / args.seconds,
                        "emulator_cpu_share": cpu_emu / args.seconds,
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
        emu.terminate()
        emu.wait(timeout=10)
        site.stop()
    rows = []
    for direction in ("enclave->gateway", "gateway->enclave"):
        mine = [r for r in runs if r["direction"] == direction]
        rows.append(
            (
                direction,
                median([r["received_mbit_s"] for r in mine]),
                round(median([r["sengd_cpu_share"] for r in mine]) * 100),
                round(median([r["emulator_cpu_share"] for r in mine]) * 100),
            )
        )
    write_results(
        "iperf" + "-fast" * args.fast_records + "-isolated" * args.isolate_forwarding,
        {"method": __doc__, "args": vars(args), "runs": runs},
        rows,
        ("direction", "iperf3 TCP Mbit/s", "sengd CPU %", "enclave emulator CPU %"),
        notes=f"Median of {args.repeats} runs of {args.seconds} s, {args.streams} TCP "
        f"stream(s), enclave TUN MTU {args.tun_mtu}, gateway tunnel MTU 1432.",
    )


if __name__ == "__main__":
    main()
