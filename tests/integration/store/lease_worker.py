"""A gateway process for the store integration tests, driven line by line over stdin/stdout.

    python lease_worker.py URL GATEWAY_ID SUBNET_ID

On start it opens the store the way the daemon does (`open_database` + `Allocator.start()`),
prints `{"ready": [reclaimed addresses]}` and then obeys one command per line:
- `drain AT`: wait until the Unix time AT (so that several workers start together), then lease
  until the subnet is exhausted; print `{"leased": [...], "conflicts": n, "began": t0,
  "ended": t1}` (Unix times of the first attempt and of the exhaustion);
- `lease N`: lease N addresses; print `{"leased": [...]}`;
- `release`: release every lease it holds; print `{"released": n}`;
- `quit`: exit.
"""

from __future__ import annotations

import json
import sys
import time
from ipaddress import IPv4Address

from sengd.store.allocator import Allocator, EndReason
from sengd.store.db import open_database
from sengd.store.errors import PoolExhausted

MR_ENCLAVE = bytes(range(32))
MR_SIGNER = bytes(range(32, 64))


def main() -> int:
    url, gateway_id, subnet_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = open_database(url)
    allocator = Allocator(engine, gateway_id)
    reclaimed = allocator.start()
    held: dict[int, str] = {}

    def reply(message: object) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    def lease_one() -> str:
        grant = allocator.lease(
            subnet_id,
            mr_enclave=MR_ENCLAVE,
            mr_signer=MR_SIGNER,
            host_address=IPv4Address("127.0.0.1"),
            host_port=len(held),
        )
        held[grant.lease_id] = str(grant.address)
        return str(grant.address)

    reply({"ready": [str(r.address) for r in reclaimed]})
    for line in sys.stdin:
        command = line.split()
        if command and command[0] == "drain":
            time.sleep(max(0.0, float(command[1]) - time.time()))
            leased = []
            before = allocator.conflicts
            began = time.time()
            while True:
                try:
                    leased.append(lease_one())
                except PoolExhausted:
                    break
            ended = time.time()
            conflicts = allocator.conflicts - before
            reply({"leased": leased, "conflicts": conflicts, "began": began, "ended": ended})
        elif command and command[0] == "lease":
            reply({"leased": [lease_one() for _ in range(int(command[1]))]})
        elif command == ["release"]:
            for lease_id in list(held):
                allocator.release(lease_id, EndReason.CLOSED)
                del held[lease_id]
            reply({"released": True})
        elif command == ["quit"]:
            break
    allocator.close()
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
