"""Load generator for the forwarding benchmarks; runs as its own process (one core).

Reads a JSON spec on stdin, sends for `duration` seconds at `rate` packets/s (0: as fast as
it can), then prints {"sent", "seconds", "blocked", "cpu"} as JSON (cpu: its own CPU seconds).

- mode "sealed" (enclave -> gateway): one inherited, connected UDP socket per enclave (its
  tunnel #1 socket, so the gateway sees the enclave's address and port) and that enclave's
  client write key and salt. Each packet is sealed as a fresh DTLS record (sequence numbers
  from `seq` upwards, so the gateway's replay window accepts them) with our record layer.
- mode "plain" (gateway -> enclave): UDP datagrams from this namespace to the enclaves'
  addresses, which the upstream host routes through the gateway into its TUN.

Run by bench.forward: .venv/bin/python -m bench.loadgen < spec.json
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

from sengd.tunnel.recordlayer import CONTENT_APPLICATION_DATA, RecordLayer


def _senders(spec: dict[str, Any]) -> list[Any]:
    """One zero-argument callable per flow that sends the next packet."""
    senders: list[Any] = []
    if spec["mode"] == "sealed":
        for fd, flow in zip(spec["fds"], spec["flows"], strict=True):
            sock = socket.socket(fileno=fd)
            sock.setblocking(True)
            layer = RecordLayer(
                read_key=os.urandom(len(bytes.fromhex(flow["key"]))),
                read_salt=bytes(4),
                write_key=bytes.fromhex(flow["key"]),
                write_salt=bytes.fromhex(flow["salt"]),
                epoch=1,
                out_seq=flow["seq"],
            )
            packet = bytes.fromhex(flow["packet"])
            senders.append(
                lambda s=sock, seal=layer.seal, p=packet: s.send(seal(CONTENT_APPLICATION_DATA, p))
            )
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        payload = os.urandom(spec["size"] - 28)
        for target in spec["targets"]:
            senders.append(lambda s=sock, a=(target, 9): s.sendto(payload, a))
    return senders


def run(spec: dict[str, Any]) -> dict[str, Any]:
    senders = _senders(spec)
    rate = float(spec["rate"])
    duration = float(spec["duration"])
    flows = len(senders)
    sent = blocked = 0
    start = time.perf_counter()
    end = start + duration
    now = start
    while now < end:
        due = int((now - start) * rate) if rate else sent + 64 * flows
        while sent < due:
            try:
                senders[sent % flows]()
            except (BlockingIOError, ConnectionRefusedError):
                blocked += 1
            sent += 1
        now = time.perf_counter()
        if rate and sent >= int((now - start) * rate):
            time.sleep(0.0005)
            now = time.perf_counter()
    return {
        "sent": sent,
        "blocked": blocked,
        "seconds": time.perf_counter() - start,
        "cpu": time.process_time(),
    }


def main() -> None:
    spec = json.load(sys.stdin)
    print(json.dumps(run(spec)), flush=True)


if __name__ == "__main__":
    main()
