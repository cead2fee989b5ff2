"""A fixed gateway for snapshot tests and the benchmark: answers shaped like sengd's own.

Every answer has exactly the keys the real daemon gives (test_live.py checks that against a
live sengd), with fixed times, ports and measurements so that screenshots never change.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

NOW = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
"""The frozen clock of the snapshot tests."""

MR_WEB = "5f" * 4 + "0c1d2e3f4a5b6c7d" * 3 + "8899aabb" * 1
MR_DB = "d00dfeed" * 8
MR_SIGNER = "0a613abc1a0a1865836bf7cfebd1e605ba1b716e2e622f053dddc813f100b81c"


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def session(
    n: int,
    app: str,
    entry_id: int | None,
    mr_enclave: str,
    *,
    host: str = "10.0.7.21",
    subnet: str = "192.168.28.0/24",
    age_s: float = 3600.0,
    rx: int = 0,
    tx: int = 0,
    rx_rate: float = 0.0,
    tx_rate: float = 0.0,
    state: str = "active",
    categories: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One session as `sessions.list` shows it."""
    base = subnet.split("/", maxsplit=1)[0].rsplit(".", 1)[0]
    ip = f"{base}.{n + 1}" if n < 254 else f"{base}.{n % 250 + 2}"
    return {
        "id": n,
        "enclave_ip": ip,
        "subnet": subnet,
        "app": app,
        "entry_id": entry_id,
        "categories": list(categories),
        "state": state,
        "host": host,
        "host_port": 40000 + n,
        "since": _iso(NOW - timedelta(seconds=age_s)),
        "rx_bytes": rx,
        "rx_packets": rx // 700,
        "tx_bytes": tx,
        "tx_packets": tx // 900,
        "rx_bytes_per_s": rx_rate,
        "tx_bytes_per_s": tx_rate,
        "drops": {"source-mismatch": 2} if n == 3 else {},
        "scheme": "epid-ias",
        "mr_enclave": mr_enclave,
        "mr_signer": MR_SIGNER,
        "isv_prod_id": 7,
        "isv_svn": 3,
        "debug": False,
        "quote_status": "GROUP_OUT_OF_DATE" if n == 2 else "OK",
        "tcb_status": None,
        "advisory_ids": ["INTEL-SA-00334"] if n == 2 else [],
        "report_id": f"1939016478823{n:02d}",
        "report_timestamp": _iso(NOW - timedelta(seconds=age_s + 95)),
        "report_age_s": age_s + 95,
        "key_type": "ec-p384" if n % 2 else "rsa-2048",
        "spki_sha256": f"{n:02x}" * 32,
    }


def sessions() -> list[dict[str, Any]]:
    """Four sessions of three apps, one still being set up."""
    return [
        session(
            1,
            "web",
            1,
            MR_WEB,
            host="10.0.7.21",
            age_s=7380,
            rx=48_200_000,
            tx=912_000_000,
            rx_rate=12_400,
            tx_rate=310_000,
            categories=("frontend",),
        ),
        session(
            2,
            "web",
            1,
            MR_WEB,
            host="10.0.7.22",
            age_s=1260,
            rx=3_100_000,
            tx=54_000_000,
            rx_rate=2_100,
            tx_rate=41_000,
            categories=("frontend",),
        ),
        session(
            3,
            "db",
            2,
            MR_DB,
            host="10.0.9.5",
            subnet="172.20.0.0/22",
            age_s=86_520,
            rx=7_900_000_000,
            tx=1_200_000_000,
            rx_rate=1_250_000,
            tx_rate=96_000,
            categories=("storage",),
        ),
        session(4, "web", 1, MR_WEB, host="10.0.7.23", age_s=2, state="awaiting-tunnel2"),
    ]


def status() -> dict[str, Any]:
    """A `status` answer."""
    return {
        "version": "0.1.0",
        "gateway": "gw-fra-1",
        "uptime_s": 273_600.0,
        "started_at": _iso(NOW - timedelta(seconds=273_600)),
        "listen": "203.0.113.10:12345",
        "listen_tunnel2": "203.0.113.10:12346",
        "interface": "tunFA",
        "mode": "allowlist",
        "allowlist_entries": 3,
        "sessions": 4,
        "active_sessions": 3,
        "pending_handshakes": 0,
        "handshake_workers": [
            {"index": 0, "pid": 4242, "alive": True, "restarts": 0, "handoffs": 2468}
        ],
        "handshakes": {"admitted": 412, "paired": 409, "denied:not-allowlisted": 17},
        "drops": {},
        "listener_drops": {},
        "rx_bytes": 7_951_300_000,
        "rx_packets": 11_000_000,
        "tx_bytes": 2_166_000_000,
        "tx_packets": 2_400_000,
    }


def hello() -> dict[str, Any]:
    """An `rpc.hello` answer for root."""
    return {
        "protocol": 1,
        "version": "0.1.0",
        "gateway": "gw-fra-1",
        "user": "root",
        "uid": 0,
        "role": "admin",
    }


def denials() -> list[dict[str, Any]]:
    """A `denials.recent` answer (oldest first)."""
    return [
        {
            "at": _iso(NOW - timedelta(seconds=540)),
            "tunnel": 1,
            "host": "10.0.7.40",
            "port": 51111,
            "reason": "svn-too-low",
            "detail": "entry 1 ('web') needs ISV SVN >= 3, the enclave has 2",
            "mr_enclave": MR_WEB,
            "app": None,
        },
        {
            "at": _iso(NOW - timedelta(seconds=95)),
            "tunnel": 1,
            "host": "10.0.8.3",
            "port": 40512,
            "reason": "cert-expired",
            "detail": "notAfter 2025-12-01T00:00:00Z is past",
            "mr_enclave": None,
            "app": None,
        },
        {
            "at": _iso(NOW - timedelta(seconds=30)),
            "tunnel": 1,
            "host": "10.0.9.77",
            "port": 39001,
            "reason": "not-allowlisted",
            "detail": f"no allowlist entry for MRENCLAVE {'e7' * 32}",
            "mr_enclave": "e7" * 32,
            "app": None,
        },
    ]


def _route(host: str, name: str, cidr: str, subnet_id: int) -> dict[str, Any]:
    return {
        "host_subnet": host,
        "enclave_subnet": name,
        "enclave_cidr": cidr,
        "enclave_subnet_id": subnet_id,
    }


def _entry(entry_id: int, name: str, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": entry_id,
        "name": name,
        "match": "mr_enclave",
        "mr_enclave": None,
        "mr_signer": None,
        "isv_prod_id": None,
        "min_isv_svn": 0,
        "host_routes": [],
        "categories": [],
        "allow_debug": None,
        "quote_statuses": None,
        "tcb_statuses": None,
        "denied_advisories": [],
        "enabled": True,
        "comment": "",
        "created_at": _iso(NOW - timedelta(days=30)),
        "updated_at": _iso(NOW - timedelta(days=2)),
        "open_leases": 0,
    }
    doc.update(fields)
    return doc


def allowlist() -> list[dict[str, Any]]:
    """An `allowlist.list` answer."""
    return [
        _entry(
            1,
            "web",
            mr_enclave=MR_WEB,
            min_isv_svn=3,
            host_routes=[_route("10.0.7.0/24", "default", "192.168.28.0/24", 1)],
            categories=["frontend"],
            comment="public web tier",
            open_leases=3,
        ),
        _entry(
            2,
            "db",
            match="signer",
            mr_signer=MR_SIGNER,
            isv_prod_id=7,
            min_isv_svn=1,
            host_routes=[_route("10.0.9.0/24", "storage", "172.20.0.0/22", 2)],
            categories=["storage"],
            quote_statuses=["GROUP_OUT_OF_DATE", "OK", "SW_HARDENING_NEEDED"],
            open_leases=1,
        ),
        _entry(
            3,
            "batch-old",
            mr_enclave="0b" * 32,
            host_routes=[_route("0.0.0.0/0", "default", "192.168.28.0/24", 1)],
            enabled=False,
            comment="retired in December",
        ),
    ]


def subnets() -> list[dict[str, Any]]:
    """A `subnets.list` answer."""
    return [
        {
            "id": 1,
            "name": "default",
            "network": "192.168.28.0/24",
            "gateway": "192.168.28.1",
            "description": "",
            "marked_default": True,
            "default": True,
            "entries": ["batch-old", "web"],
            "open_leases": 3,
            "addresses": 253,
        },
        {
            "id": 2,
            "name": "storage",
            "network": "172.20.0.0/22",
            "gateway": "172.20.0.1",
            "description": "database enclaves, firewalled to the storage VLAN",
            "marked_default": False,
            "default": False,
            "entries": ["db"],
            "open_leases": 1,
            "addresses": 1021,
        },
    ]


def stats_events(count: int = 90) -> list[dict[str, Any]]:
    """`stats` notifications, one a second: a throughput wave, 12 handshakes and 3 denials
    in the last minute."""
    events = []
    for i in range(count):
        rx = 1_300_000 + 900_000 * math.sin(i / 6.0)
        tx = 450_000 + 300_000 * math.cos(i / 9.0)
        handshakes = {
            "admitted": 400 + (i * 12) // 60,
            "paired": 397 + (i * 12) // 60,
            "denied:not-allowlisted": 14 + (i * 3) // 60,
        }
        events.append(
            {
                "sessions": 4,
                "active_sessions": 3,
                "rx_bytes_per_s": round(rx, 1),
                "tx_bytes_per_s": round(tx, 1),
                "handshakes": handshakes,
                "rx_bytes": 7_951_300_000 + i * 1_300_000,
                "rx_packets": 11_000_000 + i * 1800,
                "tx_bytes": 2_166_000_000 + i * 450_000,
                "tx_packets": 2_400_000 + i * 500,
            }
        )
    return events


def answers() -> dict[str, Any]:
    """Every method the dashboard calls, answered from the data above."""
    return {
        "rpc.hello": hello(),
        "status": status(),
        "sessions.list": sessions(),
        "denials.recent": lambda params: denials()[-int(params.get("limit", 50)) :],
        "allowlist.list": allowlist(),
        "subnets.list": subnets(),
    }
