"""Import of original SENG databases: in_addr decoding, the two demo files, idempotence,
conflicts and refusals."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from sengd.store.allowlist import load_allowlist
from sengd.store.db import create_store_engine, schema_status
from sengd.store.errors import LegacyImportError, UpgradeRequired
from sengd.store.legacy import (
    LegacySchema,
    decode_in_addr,
    decode_netmask,
    encode_in_addr,
    import_legacy_file,
    read_legacy_database,
)
from sengd.store.models import App, AuditEvent, Category, EnclaveSubnet, HostRouteRow

from .helpers import make_subnet
from .legacy_fixtures import (
    NETFILTER_DEMO_ENCLAVE,
    NETFILTER_DEMO_SIGNER,
    NETFILTER_NGINX_ENCLAVE,
    NETFILTER_NGINX_SIGNER,
    VANILLA_DEMO_ENCLAVE,
    VANILLA_NGINX_ENCLAVE,
    VANILLA_SCHEMA,
    VANILLA_SIGNER,
    build_sqlite,
    demo_hash,
    netfilter_demo_db,
    vanilla_demo_db,
)


def test_demo_hashes_have_the_documented_prefix_and_suffix() -> None:
    assert VANILLA_DEMO_ENCLAVE.hex().startswith("d0d88374")
    assert VANILLA_DEMO_ENCLAVE.hex().endswith("29e0")
    assert len({VANILLA_DEMO_ENCLAVE, VANILLA_NGINX_ENCLAVE, NETFILTER_DEMO_ENCLAVE}) == 3
    assert demo_hash("d0d88374…29e0") == VANILLA_DEMO_ENCLAVE  # deterministic


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (35432640, "192.168.28.2"),  # PROTOCOL.md's worked example, 0x021CA8C0
        (0x001CA8C0, "192.168.28.0"),
        (0x011CA8C0, "192.168.28.1"),
        (0x001C10AC, "172.16.28.0"),
        (0x0100007F, "127.0.0.1"),
        (0x00FFFFFF, "255.255.255.0"),
        (0xC0FFFFFF, "255.255.255.192"),
        (0, "0.0.0.0"),
        (0xFFFFFFFF, "255.255.255.255"),
        (-1, "255.255.255.255"),  # written through a signed 32-bit API
        (-1056964609, "255.255.255.192"),  # 0xC0FFFFFF as a signed int32
    ],
)
def test_in_addr_values_decode(value: int, address: str) -> None:
    assert decode_in_addr(value) == IPv4Address(address)
    assert decode_in_addr(encode_in_addr(IPv4Address(address))) == IPv4Address(address)


@pytest.mark.parametrize("value", [2**32, -(2**31) - 1, "0x001ca8c0", 1.5, None, b"\x00", True])
def test_in_addr_refuses_non_32_bit_values(value: object) -> None:
    with pytest.raises(ValueError, match=r"integer|32-bit"):
        decode_in_addr(value)


@pytest.mark.parametrize(
    ("mask", "prefix"), [(0x00FFFFFF, 24), (0xC0FFFFFF, 26), (0, 0), (0xFFFFFFFF, 32)]
)
def test_netmasks_decode_to_prefixes(mask: int, prefix: int) -> None:
    assert decode_netmask(mask) == prefix


def test_non_contiguous_netmask_is_refused() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        decode_netmask(encode_in_addr(IPv4Address("255.0.255.0")))


def _subnets(session: Session) -> list[tuple[str, str]]:
    rows = session.scalars(select(EnclaveSubnet).order_by(EnclaveSubnet.network)).all()
    return sorted((str(s.cidr), str(s.gateway_address)) for s in rows)


def test_vanilla_demo_imports_exactly(engine: Engine, tmp_path: Path) -> None:
    path = vanilla_demo_db(tmp_path)
    assert read_legacy_database(path).schema is LegacySchema.VANILLA
    report = import_legacy_file(engine, path)
    assert report.conflicts == []
    assert (report.subnets_created, report.entries_created, report.routes_added) == (2, 2, 2)
    with Session(engine) as session:
        assert _subnets(session) == [
            ("172.16.28.0/26", "172.16.28.1"),
            ("192.168.28.0/24", "192.168.28.1"),
        ]
        subnet_of = {s.id: str(s.cidr) for s in session.scalars(select(EnclaveSubnet))}
        entries = load_allowlist(session)
        apps = {a.id: a for a in session.scalars(select(App))}
    summary = sorted(
        (
            e.name,
            e.mr_enclave,
            tuple((str(r.host_subnet), subnet_of[r.enclave_subnet_id]) for r in e.host_routes),
            e.enabled,
            e.categories,
        )
        for e in entries
    )
    assert summary == [
        ("DemoEnclave", VANILLA_DEMO_ENCLAVE, (("127.0.0.0/26", "192.168.28.0/24"),), True, ()),
        ("SDK-NGINX", VANILLA_NGINX_ENCLAVE, (("127.0.0.0/26", "172.16.28.0/26"),), True, ()),
    ]
    for entry in entries:
        # Matched by MRENCLAVE; the signer is kept, informational as in the original.
        assert entry.mr_signer == VANILLA_SIGNER
        assert apps[entry.id].mr_signer == VANILLA_SIGNER
        assert entry.isv_prod_id is None


def test_netfilter_demo_imports_exactly(engine: Engine, tmp_path: Path) -> None:
    path = netfilter_demo_db(tmp_path)
    assert read_legacy_database(path).schema is LegacySchema.NETFILTER
    report = import_legacy_file(engine, path)
    assert report.conflicts == []
    with Session(engine) as session:
        assert _subnets(session) == [("192.168.28.0/24", "192.168.28.1")]
        entries = load_allowlist(session)
        signers = {a.name: a.mr_signer for a in session.scalars(select(App))}
        categories = sorted(session.scalars(select(Category.name)))
    assert categories == ["Demo", "Server"]
    assert sorted(
        (e.name, e.mr_enclave, e.categories, tuple(str(r.host_subnet) for r in e.host_routes))
        for e in entries
    ) == [
        ("DemoEnclave", NETFILTER_DEMO_ENCLAVE, ("Demo",), ("0.0.0.0/0",)),
        ("SENG-NGINX", NETFILTER_NGINX_ENCLAVE, ("Server",), ("0.0.0.0/0",)),
    ]
    assert signers == {"DemoEnclave": NETFILTER_DEMO_SIGNER, "SENG-NGINX": NETFILTER_NGINX_SIGNER}


def _snapshot(engine: Engine) -> dict[str, object]:
    with Session(engine) as session:
        return {
            "subnets": session.execute(
                select(EnclaveSubnet.id, EnclaveSubnet.name, EnclaveSubnet.network)
            ).all(),
            "apps": session.execute(select(App.id, App.name, App.updated_at)).all(),
            "routes": session.execute(select(HostRouteRow.app_id, HostRouteRow.host_network)).all(),
            "categories": session.execute(select(Category.id, Category.name)).all(),
            "audit": session.scalar(select(func.count()).select_from(AuditEvent)),
        }


def test_importing_twice_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    for path in (vanilla_demo_db(tmp_path), netfilter_demo_db(tmp_path)):
        first = import_legacy_file(engine, path)
        assert first.changed
        before = _snapshot(engine)
        second = import_legacy_file(engine, path)
        assert not second.changed
        assert second.conflicts == []
        assert len(second.unchanged) >= 2
        assert _snapshot(engine) == before


def test_both_demos_share_the_default_subnet(engine: Engine, tmp_path: Path) -> None:
    import_legacy_file(engine, vanilla_demo_db(tmp_path))
    report = import_legacy_file(engine, netfilter_demo_db(tmp_path))
    assert report.subnets_created == 0
    assert report.conflicts == []
    with Session(engine) as session:
        assert len(_subnets(session)) == 2
        assert len(load_allowlist(session)) == 4


def test_dry_run_changes_nothing_even_the_schema(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    report = import_legacy_file(engine, vanilla_demo_db(tmp_path), dry_run=True)
    assert report.dry_run
    assert report.entries_created == 2
    assert schema_status(engine).state == "empty"
    engine.dispose()


def test_import_is_audited_as_legacy_import(engine: Engine, tmp_path: Path) -> None:
    import_legacy_file(engine, netfilter_demo_db(tmp_path))
    with Session(engine) as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert {e.actor_name for e in events} == {"legacy-import"}
    assert [(e.action, e.object_type) for e in events] == [
        ("create", "enclave_subnet"),
        ("create", "category"),
        ("create", "app"),
        ("create", "category"),
        ("create", "app"),
        ("import-legacy", "legacy_database"),
    ]
    app_event = events[2]
    assert app_event.before is None
    assert app_event.after is not None
    assert app_event.after["mr_enclave"] == NETFILTER_DEMO_ENCLAVE.hex()
    assert app_event.after["categories"] == ["Demo"]
    assert events[-1].after is not None
    assert events[-1].after["entries_created"] == 2


def test_conflicts_are_reported_and_existing_data_kept(engine: Engine, tmp_path: Path) -> None:
    # 192.168.28.0/24 exists with another gateway; 172.16.28.0/26 is covered by a bigger subnet.
    make_subnet(engine, "192.168.28.0/24", "192.168.28.254", name="mine")
    make_subnet(engine, "172.16.0.0/16", name="big")
    report = import_legacy_file(engine, vanilla_demo_db(tmp_path))
    assert any("gateway 192.168.28.254; kept" in c for c in report.conflicts)
    assert any("172.16.28.0/26" in c and "overlaps" in c for c in report.conflicts)
    assert any("SDK-NGINX" in c and "skipped" in c for c in report.conflicts)
    with Session(engine) as session:
        assert _subnets(session) == [
            ("172.16.0.0/16", "172.16.0.1"),
            ("192.168.28.0/24", "192.168.28.254"),
        ]
        assert [e.name for e in load_allowlist(session)] == ["DemoEnclave"]


def test_existing_entry_gets_missing_routes_only(engine: Engine, tmp_path: Path) -> None:
    import_legacy_file(engine, vanilla_demo_db(tmp_path))
    with Session(engine) as session:
        app = session.scalars(select(App).where(App.name == "DemoEnclave")).one()
        app.name = "Renamed by the admin"
        session.commit()
    extra = tmp_path / "extra.db"
    build_sqlite(
        extra,
        VANILLA_SCHEMA
        + "INSERT INTO enclave_subnets VALUES (1, 0x001ca8c0, 0x00ffffff, 0x011ca8c0);"
        + f"INSERT INTO apps VALUES (1, 'DemoEnclave', X'{VANILLA_DEMO_ENCLAVE.hex()}', "
        + f"X'{VANILLA_SIGNER.hex()}', 0x0000000a, 0x000000ff, 1);",
    )
    report = import_legacy_file(engine, extra)
    assert report.entries_updated == 1
    assert report.routes_added == 1
    assert any("Renamed by the admin" in c for c in report.conflicts)
    with Session(engine) as session:
        entry = next(e for e in load_allowlist(session) if e.mr_enclave == VANILLA_DEMO_ENCLAVE)
    assert entry.name == "Renamed by the admin"
    assert [str(r.host_subnet) for r in entry.host_routes] == ["127.0.0.0/26", "10.0.0.0/8"]


def test_rows_sharing_an_mrenclave_become_one_entry(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "multi.db"
    enclave = VANILLA_DEMO_ENCLAVE.hex()
    build_sqlite(
        path,
        VANILLA_SCHEMA
        + "INSERT INTO enclave_subnets VALUES (1, 0x001ca8c0, 0x00ffffff, 0x011ca8c0);"
        + "INSERT INTO enclave_subnets VALUES (2, 0x001c10ac, 0xc0ffffff, NULL);"
        + f"INSERT INTO apps VALUES (1, 'Demo', X'{enclave}', X'{enclave}', 0x0000000a, 0xff, 1);"
        + f"INSERT INTO apps VALUES (2, 'Demo', X'{enclave}', X'{enclave}', 0x0100007f, -1, 2);"
        + f"INSERT INTO apps VALUES (3, 'Bad', X'0102', X'{enclave}', 0x0100007f, -1, 2);"
        + f"INSERT INTO apps VALUES (4, 'Odd', X'{'11' * 32}', X'00', 0x0100007f, 0xff00ff, 1);",
    )
    report = import_legacy_file(engine, path)
    assert any("no gateway stored; using 172.16.28.1" in n for n in report.notes)
    assert any("apps id 3" in c and "2-byte BLOB" in c for c in report.conflicts)
    assert any("apps id 4" in c and "contiguous" in c for c in report.conflicts)
    with Session(engine) as session:
        entries = load_allowlist(session)
        subnet_of = {s.id: str(s.cidr) for s in session.scalars(select(EnclaveSubnet))}
    assert len(entries) == 1
    # Most specific host subnet first: the /32 before the /8.
    assert [
        (str(r.host_subnet), subnet_of[r.enclave_subnet_id]) for r in entries[0].host_routes
    ] == [
        ("127.0.0.1/32", "172.16.28.0/26"),
        ("10.0.0.0/8", "192.168.28.0/24"),
    ]


def test_unusable_legacy_subnets_are_reported(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "badsubnets.db"
    build_sqlite(
        path,
        VANILLA_SCHEMA
        + "INSERT INTO enclave_subnets VALUES (1, 0x001ca8c0, 0xfeffffff, 0x011ca8c0);"  # /31
        + "INSERT INTO enclave_subnets VALUES (2, 0x001ca8c0, 0x00ffffff, 0x001ca8c0);"  # gw=.0
        + f"INSERT INTO apps VALUES (1, 'A', X'{'22' * 32}', X'{'22' * 32}', 0, 0, 1);",
    )
    report = import_legacy_file(engine, path)
    assert any("enclave_subnets id 1" in c and "/31" in c for c in report.conflicts)
    assert any(
        "enclave_subnets id 2" in c and "network or broadcast" in c for c in report.conflicts
    )
    assert any("no usable host route" in c for c in report.conflicts)
    assert not report.changed


def test_files_of_neither_schema_are_refused(engine: Engine, tmp_path: Path) -> None:
    other = build_sqlite(tmp_path / "other.db", "CREATE TABLE things (id INTEGER);")
    with pytest.raises(LegacyImportError, match=r"neither the vanilla .* tables found: things"):
        import_legacy_file(engine, other)
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 10)
    with pytest.raises(LegacyImportError, match="not an SQLite database"):
        read_legacy_database(text)
    with pytest.raises(LegacyImportError, match="cannot read"):
        read_legacy_database(tmp_path / "missing.db")
    # A seng-gateway database (it has apps and categories tables) is not a legacy one either.
    assert engine.url.database is not None
    with pytest.raises(LegacyImportError, match="neither"):
        read_legacy_database(Path(engine.url.database))


def test_legacy_file_is_not_modified(engine: Engine, tmp_path: Path) -> None:
    path = vanilla_demo_db(tmp_path)
    before = path.read_bytes()
    import_legacy_file(engine, path)
    assert path.read_bytes() == before


def test_outdated_database_is_not_upgraded_by_import(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:  # a schema of some older, unknown shape
        conn.exec_driver_sql("CREATE TABLE apps (id INTEGER)")
    with pytest.raises(UpgradeRequired, match="sengadm db upgrade"):
        import_legacy_file(engine, vanilla_demo_db(tmp_path))
    engine.dispose()
