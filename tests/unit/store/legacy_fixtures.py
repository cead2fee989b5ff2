"""The original SENG demo databases, rebuilt from the facts in PROTOCOL.md §9.

The CREATE TABLE statements follow the schemas described there (`seng_db_creator.sql` and
`seng_netfilter_db_creator.sql`); the INSERTs store the documented demo values, addresses and
masks as in_addr integers written as hex literals like the original script.

PROTOCOL.md gives the demo MRENCLAVE/MRSIGNER values only abbreviated (first 4 and last 2
bytes, e.g. `d0d88374…29e0`). `demo_hash` builds a 32-byte value with exactly that prefix and
suffix and a deterministic middle (SHA-256 of the abbreviation), so the fixtures are stable and
the test can check that the bytes round-trip. The original script writes names with double
quotes (SQLite's legacy DQS behaviour); the fixtures use standard single quotes, which store the
same TEXT values.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path


def demo_hash(abbreviated: str) -> bytes:
    """A 32-byte hash matching an abbreviation "aabbccdd…eeff" (4-byte prefix, 2-byte suffix)."""
    prefix, suffix = abbreviated.split("…")
    head, tail = bytes.fromhex(prefix), bytes.fromhex(suffix)
    middle = hashlib.sha256(abbreviated.encode()).digest()[: 32 - len(head) - len(tail)]
    value = head + middle + tail
    assert len(value) == 32
    return value


VANILLA_DEMO_ENCLAVE = demo_hash("d0d88374…29e0")
VANILLA_NGINX_ENCLAVE = demo_hash("42a5bd14…31bc")
VANILLA_SIGNER = demo_hash("be7403a5…d1a0")
NETFILTER_DEMO_ENCLAVE = demo_hash("d9237809…c3b0")
NETFILTER_DEMO_SIGNER = demo_hash("100dbba6…ce2a")
NETFILTER_NGINX_ENCLAVE = demo_hash("d5876e37…f792")
NETFILTER_NGINX_SIGNER = demo_hash("ad373d1d…7c6f")

VANILLA_SCHEMA = """
CREATE TABLE enclave_subnets (
    id INTEGER PRIMARY KEY,
    subnet INTEGER NOT NULL,
    submask INTEGER NOT NULL,
    gateway INTEGER,
    UNIQUE (subnet, submask)
);
CREATE TABLE apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    mr_enclave BLOB NOT NULL,
    mr_signer BLOB NOT NULL,
    host_subnet INTEGER NOT NULL,
    host_submask INTEGER NOT NULL,
    enc_subnet_id INTEGER NOT NULL REFERENCES enclave_subnets (id),
    UNIQUE (mr_enclave, host_subnet, host_submask)
);
"""

NETFILTER_SCHEMA = """
CREATE TABLE apps (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    mr_enclave BLOB NOT NULL,
    mr_signer BLOB NOT NULL,
    UNIQUE (mr_enclave)
);
CREATE TABLE categories (
    id INTEGER,
    name TEXT NOT NULL,
    apps_id INTEGER NOT NULL REFERENCES apps (id),
    UNIQUE (name, apps_id)
);
"""


def _blob(value: bytes) -> str:
    return f"X'{value.hex()}'"


def vanilla_demo_sql() -> str:
    """The vanilla demo database: two subnets, DemoEnclave and SDK-NGINX from 127.0.0.0/26."""
    demo, nginx, signer = (
        _blob(VANILLA_DEMO_ENCLAVE),
        _blob(VANILLA_NGINX_ENCLAVE),
        _blob(VANILLA_SIGNER),
    )
    return (
        VANILLA_SCHEMA
        + "INSERT INTO enclave_subnets (id, subnet, submask, gateway)\n"
        + "    VALUES (1, 0x001ca8c0, 0x00ffffff, 0x011ca8c0);\n"
        + "INSERT INTO enclave_subnets (id, subnet, submask, gateway)\n"
        + "    VALUES (2, 0x001c10ac, 0xc0ffffff, 0x011c10ac);\n"
        + "INSERT INTO apps (id, name, mr_enclave, mr_signer, host_subnet, host_submask, "
        + "enc_subnet_id)\n"
        + f"    VALUES (1, 'DemoEnclave', {demo}, {signer}, 0x0100007f, 0xc0ffffff, 1);\n"
        + "INSERT INTO apps (id, name, mr_enclave, mr_signer, host_subnet, host_submask, "
        + "enc_subnet_id)\n"
        + f"    VALUES (2, 'SDK-NGINX', {nginx}, {signer}, 0x0100007f, 0xc0ffffff, 2);\n"
    )


def netfilter_demo_sql() -> str:
    """The netfilter demo database: DemoEnclave (category Demo), SENG-NGINX (category Server)."""
    return (
        NETFILTER_SCHEMA
        + f"""
INSERT INTO apps (id, name, mr_enclave, mr_signer)
    VALUES (1, 'DemoEnclave', {_blob(NETFILTER_DEMO_ENCLAVE)}, {_blob(NETFILTER_DEMO_SIGNER)});
INSERT INTO apps (id, name, mr_enclave, mr_signer)
    VALUES (2, 'SENG-NGINX', {_blob(NETFILTER_NGINX_ENCLAVE)}, {_blob(NETFILTER_NGINX_SIGNER)});
INSERT INTO categories (id, name, apps_id) VALUES (1, 'Demo', 1);
INSERT INTO categories (id, name, apps_id) VALUES (2, 'Server', 2);
"""
    )


def build_sqlite(path: Path, script: str) -> Path:
    """Create the SQLite file `path` (which must not exist) by running `script`."""
    if path.exists():
        raise FileExistsError(path)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(script)
        conn.commit()
    finally:
        conn.close()
    return path


def vanilla_demo_db(directory: Path) -> Path:
    """Write the vanilla demo database into `directory`."""
    return build_sqlite(directory / "seng_vanilla_demo.db", vanilla_demo_sql())


def netfilter_demo_db(directory: Path) -> Path:
    """Write the netfilter demo database into `directory`."""
    return build_sqlite(directory / "seng_netfilter_demo.db", netfilter_demo_sql())
