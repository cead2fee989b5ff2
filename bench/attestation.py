"""CPU cost of attestation: verifying one RA-TLS certificate, and one policy decision.

Method: `time.process_time_ns()` (this process's CPU time, nanosecond clock) around each call;
the figure is the median over many calls, each on a distinct certificate where "distinct"
matters. Certificates are minted by the test kit (test IAS, RSA-3072 CA like Intel's).

- cold:        every cache empty (`TrustConfig.clear_caches()` before each call): parse, self-
               signature, IAS chain under the anchor, report signature, JSON, quote, binding.
- warm chain:  a certificate never seen before, the IAS chain result already cached (the steady
               state: every enclave presents the same IAS signing certificate).
- warm:        the same certificate again (the second tunnel of a pair; whole-certificate
               cache hit, time conditions re-checked).
- decide:      `policy.decide()` against an allowlist of 10,000 entries (half MRENCLAVE, half
               signer entries, two host routes each), for an allowlisted and an unknown enclave;
               timed in batches of 1,000 calls (one call is too short to time alone).

Run:  .venv/bin/python -m bench.attestation [--samples 300]
Writes bench/results/attestation.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import cryptography

from sengd import policy
from sengd.attestation import Evidence, TrustConfig, verify_certificate
from sengd.testing.attestation_kit import KeyType, TestIas, generate_key, mint_ratls_certificate

RESULTS = Path(__file__).resolve().parent / "results"
NOW = datetime.now(UTC)
MR_ENCLAVE = hashlib.sha256(b"bench enclave").digest()


def _median_us(samples: list[int]) -> float:
    return round(statistics.median(samples) / 1000, 1)


def _timed(call: Callable[[], object]) -> int:
    start = time.process_time_ns()
    call()
    return time.process_time_ns() - start


def verification(ias: TestIas, key_type: KeyType, samples: int) -> dict[str, Any]:
    key = generate_key(key_type)
    certs = [
        mint_ratls_certificate(
            ias, key=key, mr_enclave=MR_ENCLAVE, not_before=NOW - timedelta(minutes=5)
        ).cert_der
        for _ in range(samples)
    ]
    trust = ias.trust()
    verify_certificate(certs[0], trust, NOW)  # imports, first-use allocations

    cold = []
    for cert in certs:
        trust.clear_caches()
        cold.append(_timed(lambda c=cert: verify_certificate(c, trust, NOW)))
    trust.clear_caches()
    verify_certificate(certs[0], trust, NOW)  # the chain result is now cached
    warm_chain = [_timed(lambda c=cert: verify_certificate(c, trust, NOW)) for cert in certs[1:]]
    warm = [_timed(lambda c=cert: verify_certificate(c, trust, NOW)) for cert in certs[1:]]
    return {
        "cert_bytes": len(certs[0]),
        "cold_us": _median_us(cold),
        "warm_chain_us": _median_us(warm_chain),
        "warm_us": _median_us(warm),
        "samples": len(certs),
    }


def _allowlist(n: int) -> policy.Allowlist:
    entries = []
    for i in range(n):
        digest = hashlib.sha256(i.to_bytes(4, "big")).digest()
        routes = (
            policy.HostRoute(IPv4Network(f"10.{i % 256}.0.0/16"), i % 50),
            policy.HostRoute(IPv4Network("127.0.0.0/8"), 50 + i % 50),
        )
        if i % 2:
            entries.append(
                policy.AllowlistEntry(id=i, name=f"app{i}", host_routes=routes, mr_enclave=digest)
            )
        else:
            entries.append(
                policy.AllowlistEntry(
                    id=i, name=f"signer{i}", host_routes=routes, mr_signer=digest, isv_prod_id=1
                )
            )
    # the measured enclave is entry 9,999's MRENCLAVE
    return policy.Allowlist(entries)


def decision(evidence: Evidence, batches: int) -> dict[str, Any]:
    allowlist = _allowlist(10_000)
    listed = evidence.__class__(
        **{
            **{f: getattr(evidence, f) for f in evidence.__dataclass_fields__},
            "mr_enclave": hashlib.sha256((9999).to_bytes(4, "big")).digest(),
        }
    )
    host = IPv4Address("127.0.0.1")
    assert isinstance(policy.decide(listed, host, allowlist), policy.Decision)
    assert isinstance(policy.decide(evidence, host, allowlist), policy.Denial)
    result: dict[str, Any] = {"entries": len(allowlist), "batch": 1000}
    for label, ev in (("allowlisted_us", listed), ("unknown_us", evidence)):
        per_call = []
        for _ in range(batches):
            start = time.process_time_ns()
            for _ in range(1000):
                policy.decide(ev, host, allowlist)
            per_call.append((time.process_time_ns() - start) // 1000)
        result[label] = _median_us(per_call)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="certificates per key type")
    parser.add_argument("--batches", type=int, default=50, help="decide() batches of 1,000")
    args = parser.parse_args()

    ias = TestIas.create()
    results: dict[str, Any] = {
        "benchmark": "attestation",
        "machine": f"{platform.machine()} {_cpus()} cpu, {platform.platform()}",
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "commit": _commit(),
        "method": "median of time.process_time_ns() per call (decide: per batch of 1,000)",
        "verify": {kt: verification(ias, kt, args.samples) for kt in ("rsa-2048", "ec-p384")},
    }
    sample = verify_certificate(
        mint_ratls_certificate(
            ias, key_type="ec-p256", not_before=NOW - timedelta(minutes=1)
        ).cert_der,
        TrustConfig.from_pem(ias.ca_pem),
        NOW,
    )
    results["decide"] = decision(sample, args.batches)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attestation.json").write_text(json.dumps(results, indent=1) + "\n")

    print("| measurement | RSA-2048 | EC P-384 |")
    print("|---|---|---|")
    for label, key in (
        ("verify, cold caches (µs)", "cold_us"),
        ("verify, new cert, IAS chain cached (µs)", "warm_chain_us"),
        ("verify, same cert again (µs)", "warm_us"),
    ):
        rsa_v, ec_v = results["verify"]["rsa-2048"][key], results["verify"]["ec-p384"][key]
        print(f"| {label} | {rsa_v} | {ec_v} |")
    d = results["decide"]
    print(
        f"\ndecide() against {d['entries']} entries: {d['allowlisted_us']} µs (allowlisted), "
        f"{d['unknown_us']} µs (unknown enclave)"
    )


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


if __name__ == "__main__":
    main()
