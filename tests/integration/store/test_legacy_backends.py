"""The legacy demo databases import identically into SQLite and PostgreSQL, idempotently."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from sengd.store.allowlist import load_allowlist
from sengd.store.db import create_store_engine
from sengd.store.legacy import import_legacy_file
from sengd.store.models import EnclaveSubnet
from tests.unit.store.legacy_fixtures import (
    NETFILTER_DEMO_ENCLAVE,
    NETFILTER_NGINX_ENCLAVE,
    VANILLA_DEMO_ENCLAVE,
    VANILLA_NGINX_ENCLAVE,
    VANILLA_SIGNER,
    netfilter_demo_db,
    vanilla_demo_db,
)

pytestmark = pytest.mark.integration


def test_demo_databases_import_exactly(db_url: str, tmp_path: Path) -> None:
    engine = create_store_engine(db_url)  # empty: the import creates the schema
    vanilla, netfilter = vanilla_demo_db(tmp_path), netfilter_demo_db(tmp_path)
    assert import_legacy_file(engine, vanilla, dry_run=True).entries_created == 2
    for path in (vanilla, netfilter, vanilla, netfilter):
        report = import_legacy_file(engine, path)
        assert report.conflicts == []
    assert not report.changed  # the second round changed nothing
    with Session(engine) as session:
        subnets = {
            s.id: (str(s.cidr), str(s.gateway_address))
            for s in session.scalars(select(EnclaveSubnet))
        }
        entries = load_allowlist(session)
    assert sorted(subnets.values()) == [
        ("172.16.28.0/26", "172.16.28.1"),
        ("192.168.28.0/24", "192.168.28.1"),
    ]
    summary = sorted(
        (
            e.name,
            e.mr_enclave,
            tuple((str(r.host_subnet), subnets[r.enclave_subnet_id][0]) for r in e.host_routes),
            e.categories,
        )
        for e in entries
    )
    assert summary == sorted(
        [
            ("DemoEnclave", VANILLA_DEMO_ENCLAVE, (("127.0.0.0/26", "192.168.28.0/24"),), ()),
            ("SDK-NGINX", VANILLA_NGINX_ENCLAVE, (("127.0.0.0/26", "172.16.28.0/26"),), ()),
            ("DemoEnclave", NETFILTER_DEMO_ENCLAVE, (("0.0.0.0/0", "192.168.28.0/24"),), ("Demo",)),
            (
                "SENG-NGINX",
                NETFILTER_NGINX_ENCLAVE,
                (("0.0.0.0/0", "192.168.28.0/24"),),
                ("Server",),
            ),
        ]
    )
    assert {e.mr_signer for e in entries if e.mr_enclave == VANILLA_DEMO_ENCLAVE} == {
        VANILLA_SIGNER
    }
    engine.dispose()
