"""CPU cost of DCAP attestation: verifying one DCAP RA-TLS certificate or raw quote.

Method: `time.process_time_ns()` (this process's CPU time) around each call; the figure is the
median over many calls, each on a distinct certificate where "distinct" matters. Certificates
are minted by the DCAP test kit (our own P-256 PKI shaped like Intel's, one platform whose PCK
chain is Root <- Processor CA <- PCK, quotes v3 with certification data type 5 or 3).

- warm collateral, new certificate: the headline figure. The verifier's `CollateralStore`
  already holds verified collateral (TCB info, QE identity, CRLs: loaded at start or by the
  PCCS fetcher), the certificate was never seen: parse, self-signature, quote, PCK chain to the
  pinned root, QE report / attestation key / enclave report signatures, key binding, then TCB
  level, QE identity, CRLs and validity at `now`.
- same certificate again: the second tunnel of a pair (certificate cache hit; the collateral
  evaluation and every time check still run).
- cold: every cache empty and the collateral verified from its bytes on each call (the cost
  of a verifier that caches nothing; the trust anchors are loaded once).
- sgx-ra-tls, new certificate: the collateral comes with the certificate (type-3 quote, PCK
  certificate in .7/.8); its items are verified once and cached by content.
- real quote: Intel's 2025 dcap-qvl quote (type 5, real PCK chain) against its pre-verified
  collateral (`verify_quote`, what `sengadm attest inspect --quote` does).
- collateral load: verifying the collateral bytes of one FMSPC (TCB info, QE identity, two
  CRLs and their chains), paid once per refresh, not per enclave.

Run:  .venv/bin/python -m bench.dcap [--samples 300]
Writes bench/results/dcap.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from datetime import UTC, datetime, timedelta
from typing import Any

import cryptography

from bench.attestation import RESULTS, _commit, _cpu_model, _cpus, _median_us, _timed
from sengd.attestation import (
    CollateralStore,
    RawCollateral,
    TrustConfig,
    builtin_sgx_roots,
    read_collateral_dir,
    verify_certificate,
    verify_quote,
    verify_raw,
)
from sengd.testing.attestation_kit import KeyType
from sengd.testing.dcap_kit import (
    DcapPlatform,
    DcapTestPki,
    mint_gramine_certificate,
    mint_sgx_ra_tls_certificate,
)
from tests.conftest import TESTDATA

NOW = datetime.now(UTC)
QVL = TESTDATA / "dcap-qvl-sgx-quote-2025"
QVL_AT = datetime(2025, 7, 19, 10, 1, 17, tzinfo=UTC)


def _trust(pki: DcapTestPki, raw: RawCollateral | None) -> TrustConfig:
    store = CollateralStore(pki.trust().sgx_roots)
    if raw is not None:
        assert store.load_raw(raw) == []
    return pki.trust(collateral=store)


def gramine(pki: DcapTestPki, key_type: KeyType, samples: int) -> dict[str, Any]:
    platform_ = DcapPlatform.create(pki)
    raw = pki.collateral(at=NOW - timedelta(days=1))
    start = NOW - timedelta(minutes=5)
    certs = [
        mint_gramine_certificate(platform_, key_type=key_type, not_before=start).cert_der
        for _ in range(samples)
    ]
    trust = _trust(pki, raw)
    assert verify_certificate(certs[0], trust, NOW).tcb_status == "UpToDate"
    warm = [_timed(lambda c=cert: verify_certificate(c, trust, NOW)) for cert in certs[1:]]
    again = [_timed(lambda c=cert: verify_certificate(c, trust, NOW)) for cert in certs[1:]]
    cold = []
    for cert in certs[1:]:

        def fresh(c: bytes = cert) -> None:
            store = CollateralStore(trust.sgx_roots)
            store.load_raw(raw)
            verify_certificate(c, dataclasses.replace(trust, collateral=store), NOW)

        cold.append(_timed(fresh))
    return {
        "cert_bytes": len(certs[0]),
        "warm_collateral_new_cert_us": _median_us(warm),
        "same_cert_again_us": _median_us(again),
        "cold_us": _median_us(cold),
        "samples": len(certs) - 1,
    }


def sgx_ra_tls(pki: DcapTestPki, samples: int) -> dict[str, Any]:
    platform_ = DcapPlatform.create(pki)
    raw = pki.collateral(at=NOW - timedelta(days=1))
    start = NOW - timedelta(minutes=5)
    key = mint_gramine_certificate(platform_, key_type="rsa-3072").private_key
    certs = [
        mint_sgx_ra_tls_certificate(platform_, raw, key=key, not_before=start).cert_der
        for _ in range(samples)
    ]
    trust = pki.trust()
    assert verify_certificate(certs[0], trust, NOW).tcb_status == "UpToDate"
    warm = [_timed(lambda c=cert: verify_certificate(c, trust, NOW)) for cert in certs[1:]]
    return {
        "cert_bytes": len(certs[0]),
        "embedded_collateral_cached_new_cert_us": _median_us(warm),
        "samples": len(certs) - 1,
    }


def real_quote(samples: int) -> dict[str, Any]:
    trust = TrustConfig.builtin(sgx_roots=builtin_sgx_roots())
    raw = read_collateral_dir(QVL / "collateral")
    collateral = verify_raw(raw, trust.sgx_roots)
    quote = (QVL / "sgx_quote.bin").read_bytes()
    verdict = verify_quote(quote, collateral, trust, QVL_AT)
    assert verdict.status == "ConfigurationAndSWHardeningNeeded"
    times = [_timed(lambda: verify_quote(quote, collateral, trust, QVL_AT)) for _ in range(samples)]
    load = [_timed(lambda: verify_raw(raw, trust.sgx_roots)) for _ in range(samples // 3 or 1)]
    return {
        "quote_bytes": len(quote),
        "verify_quote_us": _median_us(times),
        "collateral_load_us": _median_us(load),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="certificates per case")
    args = parser.parse_args()
    pki = DcapTestPki.create()
    results: dict[str, Any] = {
        "benchmark": "dcap",
        "machine": f"{platform.machine()} {_cpus()} cpu, {platform.platform()}",
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "commit": _commit(),
        "method": "median of time.process_time_ns() per call",
        "target_us": 2000,
        "gramine": {kt: gramine(pki, kt, args.samples) for kt in ("ec-p384", "rsa-3072")},
        "sgx_ra_tls": {"rsa-3072": sgx_ra_tls(pki, args.samples)},
        "real_quote": real_quote(args.samples),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dcap.json").write_text(json.dumps(results, indent=1) + "\n")

    g = results["gramine"]
    print("| measurement | Gramine EC P-384 | Gramine RSA-3072 |")
    print("|---|---|---|")
    for label, key in (
        ("verify, warm collateral, new certificate (µs)", "warm_collateral_new_cert_us"),
        ("verify, same certificate again (µs)", "same_cert_again_us"),
        ("verify, cold (collateral verified per call) (µs)", "cold_us"),
    ):
        print(f"| {label} | {g['ec-p384'][key]} | {g['rsa-3072'][key]} |")
    s = results["sgx_ra_tls"]["rsa-3072"]
    r = results["real_quote"]
    print(
        f"\nsgx-ra-tls RSA-3072, new certificate, embedded collateral cached: "
        f"{s['embedded_collateral_cached_new_cert_us']} µs ({s['cert_bytes']} B)\n"
        f"Intel's 2025 quote, verify_quote with verified collateral: {r['verify_quote_us']} µs; "
        f"verifying its collateral bytes: {r['collateral_load_us']} µs"
    )


if __name__ == "__main__":
    main()
