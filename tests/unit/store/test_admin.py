"""The store's administration operations (`sengd.store.admin`), through their RPC handlers.

Every test runs on a fresh SQLite file; the ones taking `any_engine` also on a database of a
private PostgreSQL server (marked `integration`, started once for this module).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sengd.attestation.evidence import Attributes, Evidence
from sengd.policy import Allowlist, Decision, Denial, decide
from sengd.rpc.protocol import CONFLICT, INVALID_PARAMS, NOT_FOUND, Params, RpcError
from sengd.store import admin
from sengd.store.allocator import Allocator, EndReason
from sengd.store.allowlist import load_allowlist
from sengd.store.audit import Actor
from sengd.store.db import create_store_engine, migrate
from sengd.store.models import App, AuditEvent, Category, EnclaveSubnet, HostRouteRow, Lease
from tests.integration.store.pg import PostgresServer, private_postgres

ACTOR = Actor(uid=4242, name="alice")
H1 = "11" * 32
H2 = "22" * 32
H3 = "33" * 32
SIGNER = "5a" * 32


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with private_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database: an SQLite file, or a new PostgreSQL database (dropped after)."""
    if request.param == "sqlite":
        engine = create_store_engine(f"sqlite:///{tmp_path / 'seng.db'}")
        migrate(engine)
        yield engine
        engine.dispose()
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    name = server.create_database()
    engine = create_store_engine(server.url(name))
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        server.drop_database(name)


def call(engine: Engine, method: str, **params: Any) -> Any:
    """Run a store method as the daemon and `sengadm --db` do: one transaction, committed."""
    with Session(engine) as session, session.begin():
        result = admin.STORE_METHODS[method].handler(session, ACTOR, Params(params))
    json.dumps(result)  # results are JSON as they are
    return result


def refused(engine: Engine, method: str, **params: Any) -> RpcError:
    """Run a method that must fail; check it changed nothing; return the error."""
    before = _dump(engine)
    with pytest.raises(RpcError) as info:
        call(engine, method, **params)
    assert _dump(engine) == before
    return info.value


def _dump(engine: Engine) -> dict[str, Any]:
    with Session(engine) as s:
        return {
            "subnets": [admin.subnet_json(x) for x in s.scalars(select(EnclaveSubnet))],
            "entries": admin.list_entries(s),
            "categories": admin.list_categories(s),
            "audit": s.scalar(select(func.count()).select_from(AuditEvent)),
            "leases": s.scalar(select(func.count()).select_from(Lease)),
        }


def audit_events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as s:
        return list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def add(engine: Engine, name: str, mr: str = H1, *routes: str, **more: Any) -> Any:
    return call(
        engine,
        "allowlist.add",
        name=name,
        mr_enclave=mr,
        host_routes=list(routes or ("0.0.0.0/0",)),
        **more,
    )


def evidence(mr_enclave: str = H1, *, svn: int = 1, debug: bool = False) -> Evidence:
    return Evidence(
        scheme="epid-ias",
        mr_enclave=bytes.fromhex(mr_enclave),
        mr_signer=bytes.fromhex(SIGNER),
        isv_prod_id=2,
        isv_svn=svn,
        cpu_svn=bytes(16),
        misc_select=0,
        attributes=Attributes(flags=0x7 if debug else 0x5, xfrm=0x3),
        report_data=bytes(64),
        quote_body=bytes(432),
        quote_status="OK",
        tcb_status=None,
        advisory_ids=(),
        report_id="1",
        report_timestamp=datetime(2030, 1, 1, tzinfo=UTC),
        key_type="ec-p256",
        spki_sha256=bytes(32),
    )


def policy(engine: Engine) -> Allowlist:
    with Session(engine) as s:
        return Allowlist(load_allowlist(s))


# -- entries and the default subnet --------------------------------------------------------


def test_first_entry_creates_the_original_default_subnet(any_engine: Engine) -> None:
    result = add(any_engine, "nginx", H1, "0.0.0.0/0", categories=["web"], comment="front")
    assert result["changed"] is True
    kinds = [(c["object"], c["action"], c["name"]) for c in result["changes"]]
    assert kinds == [
        ("subnet", "create", "default"),
        ("category", "create", "web"),
        ("entry", "create", "nginx"),
    ]
    entry = result["entry"]
    assert entry["mr_enclave"] == H1 and entry["match"] == "mr_enclave"
    assert entry["host_routes"] == [
        {
            "host_subnet": "0.0.0.0/0",
            "enclave_subnet": "default",
            "enclave_cidr": "192.168.28.0/24",
            "enclave_subnet_id": entry["host_routes"][0]["enclave_subnet_id"],
        }
    ]
    (subnet,) = call(any_engine, "subnets.list")
    assert (subnet["network"], subnet["gateway"]) == ("192.168.28.0/24", "192.168.28.1")
    assert subnet["marked_default"] and subnet["default"]
    assert subnet["entries"] == ["nginx"] and subnet["addresses"] == 253

    events = audit_events(any_engine)
    assert [(e.action, e.object_type) for e in events] == [
        ("create", "enclave_subnet"),
        ("create", "category"),
        ("create", "app"),
    ]
    assert {(e.actor_uid, e.actor_name) for e in events} == {(4242, "alice")}
    assert events[2].before is None and events[2].after == {k: entry[k] for k in events[2].after}

    # The policy reads what was written: the enclave is admitted into that subnet.
    decision = decide(evidence(H1), "203.0.113.9", policy(any_engine))
    assert isinstance(decision, Decision)
    assert decision.enclave_subnet_id == subnet["id"]


def test_default_subnet_is_the_marked_one_else_the_only_one(engine: Engine) -> None:
    # One unmarked subnet (as a database migrated from revision 0001 has): it is the default.
    with Session(engine) as s, s.begin():
        s.add(
            EnclaveSubnet(
                name="lab",
                network=int(IPv4Address("10.5.0.0")),
                prefix_len=24,
                gateway=int(IPv4Address("10.5.0.1")),
            )
        )
    entry = add(engine, "a", H1, "10.0.0.0/8")["entry"]
    assert entry["host_routes"][0]["enclave_subnet"] == "lab"

    # Two, none marked: a bare route is refused, naming both and the two ways out.
    call(engine, "subnets.add", cidr="10.6.0.0/24", name="other", default=False)
    error = refused(engine, "allowlist.add", name="b", mr_enclave=H2, host_routes=["0.0.0.0/0"])
    assert error.code == CONFLICT
    assert "lab, other" in error.message and "CIDR=SUBNET" in error.message
    # ... an explicit subnet (by name or by CIDR) works ...
    by_cidr = add(engine, "b", H2, "0.0.0.0/0=10.6.0.0/24")["entry"]
    assert by_cidr["host_routes"][0]["enclave_subnet"] == "other"
    # ... and so does marking one.
    call(engine, "subnets.set_default", name_or_cidr="other")
    assert add(engine, "c", H3, "0.0.0.0/0")["entry"]["host_routes"][0]["enclave_subnet"] == "other"
    unknown = refused(
        engine, "allowlist.add", name="d", mr_enclave="44" * 32, host_routes=["0.0.0.0/0=nowhere"]
    )
    assert unknown.code == NOT_FOUND and "nowhere" in unknown.message


def test_signer_entries_and_informational_signer(engine: Engine) -> None:
    entry = call(
        engine,
        "allowlist.add",
        name="api",
        mr_signer=SIGNER.upper(),
        isv_prod_id=2,
        min_isv_svn=3,
        host_routes=["10.1.0.0/16", "10.1.2.0/24"],
        allow_debug=True,
        quote_statuses=["OK", "SW_HARDENING_NEEDED", "OK"],
        denied_advisories=["INTEL-SA-00334"],
    )["entry"]
    assert entry["match"] == "signer" and entry["mr_signer"] == SIGNER
    assert entry["quote_statuses"] == ["OK", "SW_HARDENING_NEEDED"]
    # Decision order: most specific host subnet first.
    assert [r["host_subnet"] for r in entry["host_routes"]] == ["10.1.2.0/24", "10.1.0.0/16"]
    allowlist = policy(engine)
    assert isinstance(decide(evidence(H2, svn=3, debug=True), "10.1.2.3", allowlist), Decision)
    low = decide(evidence(H2, svn=2), "10.1.2.3", allowlist)
    assert isinstance(low, Denial) and low.reason == "svn-too-low"
    # A second entry for the same signer and product is refused (removal must revoke).
    error = refused(
        engine,
        "allowlist.add",
        name="api2",
        mr_signer=SIGNER,
        isv_prod_id=2,
        host_routes=["0.0.0.0/0"],
    )
    assert error.code == CONFLICT and "'api'" in error.message
    # Another product of the same signer is another identity.
    call(
        engine,
        "allowlist.add",
        name="api-b",
        mr_signer=SIGNER,
        isv_prod_id=3,
        host_routes=["0.0.0.0/0"],
    )
    # Beside an MRENCLAVE, signer and product are recorded, not matched.
    mixed = add(engine, "pinned", H1, mr_signer=SIGNER, isv_prod_id=2)["entry"]
    assert mixed["match"] == "mr_enclave" and mixed["mr_signer"] == SIGNER


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({"mr_enclave": "ab" * 31}, INVALID_PARAMS, "64 hexadecimal digits"),
        ({"mr_enclave": "zz" * 32}, INVALID_PARAMS, "64 hexadecimal digits"),
        ({"mr_enclave": None, "mr_signer": SIGNER}, INVALID_PARAMS, "ISV product id"),
        ({"mr_enclave": None}, INVALID_PARAMS, "needs an MRENCLAVE"),
        ({"host_routes": ["10.0.0.1/8"]}, INVALID_PARAMS, "the network is 10.0.0.0/8"),
        ({"host_routes": ["10.0.0.0/33"]}, INVALID_PARAMS, "not an IPv4 CIDR"),
        ({"host_routes": []}, INVALID_PARAMS, "at least one host route"),
        ({"host_routes": None}, INVALID_PARAMS, "host_routes is required"),
        ({"host_routes": ["10.0.0.0/8", "10.0.0.0/8=x"]}, INVALID_PARAMS, "given twice"),
        ({"host_routes": ["10.0.0.0/8="]}, INVALID_PARAMS, "nothing after '='"),
        ({"host_routes": "0.0.0.0/0"}, INVALID_PARAMS, "list of strings"),
        ({"isv_prod_id": 70000}, INVALID_PARAMS, "0..65535"),
        ({"min_isv_svn": -1}, INVALID_PARAMS, "0..65535"),
        ({"min_isv_svn": "3"}, INVALID_PARAMS, "an integer"),
        ({"allow_debug": 1}, INVALID_PARAMS, "true or false"),
        ({"quote_statuses": ["SIGNATURE_INVALID"]}, INVALID_PARAMS, "cannot be accepted"),
        ({"tcb_statuses": ["Revoked"]}, INVALID_PARAMS, "cannot be accepted"),
        ({"categories": ["no spaces"]}, INVALID_PARAMS, "category 'no spaces'"),
        ({"denied_advisories": ["INTEL SA"]}, INVALID_PARAMS, "not an advisory id"),
        ({"name": ""}, INVALID_PARAMS, "must not be empty"),
        ({"name": " padded"}, INVALID_PARAMS, "blanks"),
        ({"name": "#7"}, INVALID_PARAMS, "means an id"),
        ({"name": "x" * 129}, INVALID_PARAMS, "longer than 128"),
        ({"colour": "red"}, INVALID_PARAMS, "unknown parameter(s): colour"),
    ],
)
def test_add_refuses_bad_input_precisely(
    engine: Engine, params: dict[str, Any], code: int, needle: str
) -> None:
    add(engine, "existing", H3)
    # A parameter given as None counts as absent (JSON null).
    request = {"name": "new", "mr_enclave": H1, "host_routes": ["0.0.0.0/0"], **params}
    error = refused(engine, "allowlist.add", **request)
    assert error.code == code
    assert needle in error.message


def test_names_and_identities_are_unique(engine: Engine) -> None:
    add(engine, "nginx", H1)
    taken = refused(engine, "allowlist.add", name="nginx", mr_enclave=H2, host_routes=["0.0.0.0/0"])
    assert taken.code == CONFLICT and "exists already" in taken.message
    twice = refused(
        engine, "allowlist.add", name="nginx-copy", mr_enclave=H1, host_routes=["10.0.0.0/8"]
    )
    assert twice.code == CONFLICT and "already allowlists MRENCLAVE" in twice.message


def test_duplicate_legacy_names_are_addressed_by_id(engine: Engine) -> None:
    # A legacy import can leave two entries with one name (different MRENCLAVEs).
    first = add(engine, "demo", H1)["entry"]["id"]
    with Session(engine) as s, s.begin():
        s.add(App(name="demo", mr_enclave=bytes.fromhex(H2), denied_advisories=[]))
    error = refused(engine, "allowlist.get", name="demo")
    assert error.code == CONFLICT and f"#{first}" in error.message
    assert call(engine, "allowlist.get", name=f"#{first}")["mr_enclave"] == H1
    assert refused(engine, "allowlist.get", name="#999").code == NOT_FOUND
    call(engine, "allowlist.update", name=f"#{first}", new_name="demo-1")
    assert call(engine, "allowlist.get", name="demo")["mr_enclave"] == H2


def test_update_changes_only_what_is_given(engine: Engine) -> None:
    add(
        engine,
        "api",
        H1,
        "0.0.0.0/0",
        categories=["web"],
        allow_debug=True,
        tcb_statuses=["UpToDate"],
    )
    call(engine, "subnets.add", cidr="10.77.0.0/24", name="backend")
    result = call(
        engine,
        "allowlist.update",
        name="api",
        min_isv_svn=4,
        add_host_routes=["10.1.0.0/16=backend"],
        add_categories=["api"],
        remove_categories=["web"],
        allow_debug=None,  # null: back to the global default
        comment="v4 only",
    )
    change = result["changes"][-1]
    assert change["action"] == "update"
    assert set(change["fields"]) == {
        "min_isv_svn",
        "host_routes",
        "categories",
        "allow_debug",
        "comment",
    }
    entry = result["entry"]
    assert entry["allow_debug"] is None and entry["tcb_statuses"] == ["UpToDate"]
    assert [(r["host_subnet"], r["enclave_subnet"]) for r in entry["host_routes"]] == [
        ("10.1.0.0/16", "backend"),
        ("0.0.0.0/0", "default"),
    ]
    assert entry["categories"] == ["api"]

    # The same again changes nothing and writes no audit event.
    events = len(audit_events(engine))
    again = call(engine, "allowlist.update", name="api", min_isv_svn=4, comment="v4 only")
    assert again["changed"] is False and again["changes"] == []
    assert len(audit_events(engine)) == events

    # Re-pointing a host subnet keeps one route for it; removing an absent one is NOT_FOUND.
    moved = call(engine, "allowlist.update", name="api", add_host_routes=["10.1.0.0/16"])
    assert [r["enclave_subnet"] for r in moved["entry"]["host_routes"]] == ["default", "default"]
    missing = refused(engine, "allowlist.update", name="api", remove_host_routes=["10.9.0.0/16"])
    assert missing.code == NOT_FOUND
    # The last route cannot go, nor can both identities.
    call(engine, "allowlist.update", name="api", remove_host_routes=["10.1.0.0/16"])
    last = refused(engine, "allowlist.update", name="api", remove_host_routes=["0.0.0.0/0"])
    assert last.code == INVALID_PARAMS and "at least one host route" in last.message
    orphan = refused(engine, "allowlist.update", name="api", mr_enclave=None)
    assert orphan.code == INVALID_PARAMS
    signer = call(
        engine, "allowlist.update", name="api", mr_enclave=None, mr_signer=SIGNER, isv_prod_id=9
    )
    assert signer["entry"]["match"] == "signer"
    assert refused(engine, "allowlist.update", name="nope", comment="x").code == NOT_FOUND
    assert refused(engine, "allowlist.update", name="api", enabled=None).code == INVALID_PARAMS


def test_enable_disable_and_remove(engine: Engine) -> None:
    add(engine, "nginx", H1, categories=["web"])
    disabled = call(engine, "allowlist.disable", name="nginx")
    assert disabled["changed"] and disabled["entry"]["enabled"] is False
    assert call(engine, "allowlist.disable", name="nginx")["changed"] is False
    denial = decide(evidence(H1), "10.0.0.1", policy(engine))
    assert isinstance(denial, Denial) and denial.reason == "entry-disabled"
    assert call(engine, "allowlist.enable", name="nginx")["entry"]["enabled"] is True
    assert [e.action for e in audit_events(engine)][-2:] == ["disable", "enable"]

    # A lease of the entry keeps its history, without the entry.
    with Session(engine) as s:
        app_id = s.scalars(select(App.id)).one()
        subnet_id = s.scalars(select(EnclaveSubnet.id)).one()
    with Allocator(engine, "gw-test") as allocator:
        allocator.start()
        allocator.lease(
            subnet_id,
            mr_enclave=bytes.fromhex(H1),
            mr_signer=bytes(32),
            host_address=IPv4Address("10.0.0.1"),
            host_port=4000,
            app_id=app_id,
        )
    assert call(engine, "allowlist.get", name="nginx")["open_leases"] == 1
    removed = call(engine, "allowlist.remove", name="nginx")
    assert removed["changes"][0]["action"] == "delete"
    assert removed["entry"]["name"] == "nginx"
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(HostRouteRow)) == 0
        assert s.scalars(select(Lease.app_id)).one() is None
        assert s.scalars(select(Category.name)).all() == ["web"]
    assert audit_events(engine)[-1].after is None
    assert refused(engine, "allowlist.remove", name="nginx").code == NOT_FOUND
    assert isinstance(decide(evidence(H1), "10.0.0.1", policy(engine)), Denial)


# -- subnets -------------------------------------------------------------------------------


def test_subnet_add_marks_the_first_and_validates(any_engine: Engine) -> None:
    first = call(any_engine, "subnets.add", cidr="10.77.0.0/24")
    assert first["subnet"]["name"] == "10.77.0.0/24"
    assert first["subnet"]["gateway"] == "10.77.0.1"
    assert first["subnet"]["marked_default"] is True  # the first subnet becomes the default
    second = call(
        any_engine,
        "subnets.add",
        cidr="172.16.28.0/26",
        gateway="172.16.28.62",
        name="lab",
        description="lab enclaves",
    )
    assert second["subnet"]["marked_default"] is False
    moved = call(any_engine, "subnets.add", cidr="10.78.0.0/24", name="new", default=True)
    marks = [(c["action"], c["name"], c["after"]["marked_default"]) for c in moved["changes"]]
    assert marks == [("update", "10.77.0.0/24", False), ("create", "new", True)]
    listed = {s["name"]: s["default"] for s in call(any_engine, "subnets.list")}
    assert listed == {"10.77.0.0/24": False, "lab": False, "new": True}

    cases = [
        ({"cidr": "10.77.0.0/24", "name": "again"}, CONFLICT, "exists already"),
        ({"cidr": "10.77.0.128/25"}, CONFLICT, "overlaps 10.77.0.0/24"),
        ({"cidr": "10.0.0.0/8"}, CONFLICT, "overlaps"),
        ({"cidr": "10.90.0.0/24", "name": "lab"}, CONFLICT, "named 'lab' exists"),
        ({"cidr": "10.90.0.0/31"}, INVALID_PARAMS, "/30 or shorter"),
        ({"cidr": "10.90.0.0/24", "gateway": "10.91.0.1"}, INVALID_PARAMS, "outside"),
        ({"cidr": "10.90.0.0/24", "gateway": "10.90.0.255"}, INVALID_PARAMS, "broadcast"),
        ({"cidr": "10.90.0.5/24"}, INVALID_PARAMS, "the network is 10.90.0.0/24"),
        ({"cidr": "10.90.0.0/24", "name": "10.91.0.0/24"}, INVALID_PARAMS, "another subnet"),
        ({"cidr": "10.90.0.0/24", "gateway": "nope"}, INVALID_PARAMS, "not an IPv4 address"),
        ({"name": "x"}, INVALID_PARAMS, "missing parameter 'cidr'"),
    ]
    for params, code, needle in cases:
        error = refused(any_engine, "subnets.add", **params)
        assert (error.code, needle in error.message) == (code, True), (params, error.message)


def test_one_default_mark_is_enforced_by_the_database(any_engine: Engine) -> None:
    call(any_engine, "subnets.add", cidr="10.77.0.0/24")
    call(any_engine, "subnets.add", cidr="10.78.0.0/24")
    with Session(any_engine) as s, pytest.raises(IntegrityError):
        for subnet in s.scalars(select(EnclaveSubnet)):
            subnet.is_default = True
        s.commit()


def test_subnet_remove_refuses_in_use_unless_forced(any_engine: Engine) -> None:
    call(any_engine, "subnets.add", cidr="192.168.28.0/24", name="default")
    call(any_engine, "subnets.add", cidr="10.77.0.0/24", name="backend")
    add(any_engine, "a", H1, "0.0.0.0/0", "10.1.0.0/16=backend")
    add(any_engine, "b", H2, "10.2.0.0/16=backend")
    with Session(any_engine) as s:
        backend_id = s.scalars(
            select(EnclaveSubnet.id).where(EnclaveSubnet.name == "backend")
        ).one()
    with Allocator(any_engine, "gw-test") as allocator:
        allocator.start()
        grant = allocator.lease(
            backend_id,
            mr_enclave=bytes.fromhex(H2),
            mr_signer=bytes(32),
            host_address=IPv4Address("10.2.0.9"),
            host_port=4000,
        )
        allocator.lease(
            backend_id,
            mr_enclave=bytes.fromhex(H2),
            mr_signer=bytes(32),
            host_address=IPv4Address("10.2.0.9"),
            host_port=4001,
        )
        allocator.release(grant.lease_id, EndReason.CLOSED)

    error = refused(any_engine, "subnets.remove", name_or_cidr="backend")
    assert error.code == CONFLICT
    assert error.data == {"entries": ["a", "b"], "open_leases": 1}
    assert "'a', 'b'" in error.message and "1 enclave(s)" in error.message

    result = call(any_engine, "subnets.remove", name_or_cidr="10.77.0.0/24", force=True)
    assert result["subnet"]["name"] == "backend"
    assert result["entries_lost_routes"] == [
        {"name": "a", "host_subnets": ["10.1.0.0/16"]},
        {"name": "b", "host_subnets": ["10.2.0.0/16"]},
    ]
    assert result["entries_without_routes"] == ["b"]
    assert result["leases_deleted"] == {"open": 1, "closed": 1}
    assert [(c["object"], c["action"]) for c in result["changes"]] == [
        ("entry", "update"),
        ("entry", "update"),
        ("subnet", "delete"),
    ]
    assert [s["name"] for s in call(any_engine, "subnets.list")] == ["default"]
    assert call(any_engine, "allowlist.get", name="b")["host_routes"] == []
    assert refused(any_engine, "subnets.remove", name_or_cidr="backend").code == NOT_FOUND

    # A subnet with history only (no routes, no open lease) goes without force.
    with Session(any_engine) as s:
        default_id = s.scalars(select(EnclaveSubnet.id)).one()
    with Allocator(any_engine, "gw-test") as allocator:
        allocator.start()
        grant = allocator.lease(
            default_id,
            mr_enclave=bytes.fromhex(H1),
            mr_signer=bytes(32),
            host_address=IPv4Address("10.2.0.9"),
            host_port=4000,
        )
        allocator.release(grant.lease_id, EndReason.CLOSED)
    call(any_engine, "allowlist.update", name="a", host_routes=["0.0.0.0/0=default"])
    assert refused(any_engine, "subnets.remove", name_or_cidr="default").code == CONFLICT
    call(any_engine, "allowlist.remove", name="a")
    gone = call(any_engine, "subnets.remove", name_or_cidr="default")
    assert gone["leases_deleted"] == {"open": 0, "closed": 1}


def test_set_default(engine: Engine) -> None:
    call(engine, "subnets.add", cidr="10.77.0.0/24", name="a")
    call(engine, "subnets.add", cidr="10.78.0.0/24", name="b")
    assert call(engine, "subnets.set_default", name_or_cidr="a")["changed"] is False
    result = call(engine, "subnets.set_default", name_or_cidr="10.78.0.0/24")
    assert [(c["name"], c["fields"]) for c in result["changes"]] == [
        ("a", ["marked_default"]),
        ("b", ["marked_default"]),
    ]
    assert refused(engine, "subnets.set_default", name_or_cidr="c").code == NOT_FOUND


# -- categories and audit ------------------------------------------------------------------


def test_categories_and_audit_list(engine: Engine) -> None:
    add(engine, "a", H1, categories=["web", "db"])
    add(engine, "b", H2, categories=["web"])
    categories = call(engine, "categories.list")
    assert [(c["name"], c["entries"]) for c in categories] == [("db", ["a"]), ("web", ["a", "b"])]

    events = call(engine, "audit.list")
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)  # oldest first
    assert [e["action"] for e in events][-1] == "create"
    assert events[-1]["after"]["name"] == "b" and events[-1]["actor_name"] == "alice"
    assert [e["id"] for e in call(engine, "audit.list", limit=2)] == [e["id"] for e in events[-2:]]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert call(engine, "audit.list", since=future) == []
    assert len(call(engine, "audit.list", since="2000-01-01T00:00:00Z")) == len(events)
    assert refused(engine, "audit.list", limit=0).code == INVALID_PARAMS
    assert refused(engine, "audit.list", limit=1001).code == INVALID_PARAMS
    assert refused(engine, "audit.list", since="yesterday").code == INVALID_PARAMS


# -- apply ---------------------------------------------------------------------------------

DOC: dict[str, Any] = {
    "version": 1,
    "subnet": [
        {"name": "default", "cidr": "192.168.28.0/24", "gateway": "192.168.28.1"},
        {"name": "backend", "cidr": "10.77.0.0/24", "default": True, "description": "api"},
    ],
    "category": [{"name": "web", "description": "front ends"}],
    "enclave": [
        {
            "name": "nginx",
            "mr_enclave": H1,
            "host_subnets": ["0.0.0.0/0=default"],
            "categories": ["web"],
        },
        {
            "name": "api",
            "mr_signer": SIGNER,
            "isv_prod_id": 2,
            "min_isv_svn": 3,
            "host_subnets": ["10.1.0.0/16", "10.2.0.0/16=default"],
            "allow_debug": False,
        },
    ],
}


def test_apply_is_idempotent_and_dry_run_changes_nothing(any_engine: Engine) -> None:
    dry = call(any_engine, "apply", document=DOC, dry_run=True)
    assert dry["dry_run"] and dry["changed"]
    assert _dump(any_engine)["entries"] == []
    assert _dump(any_engine)["audit"] == 0

    first = call(any_engine, "apply", document=DOC)
    assert [(c["object"], c["action"], c["name"]) for c in first["changes"]] == [
        (c["object"], c["action"], c["name"]) for c in dry["changes"]
    ]
    created = {(c["object"], c["name"]) for c in first["changes"] if c["action"] == "create"}
    assert created == {
        ("subnet", "default"),
        ("subnet", "backend"),
        ("category", "web"),
        ("entry", "nginx"),
        ("entry", "api"),
    }
    api = call(any_engine, "allowlist.get", name="api")
    assert [(r["host_subnet"], r["enclave_subnet"]) for r in api["host_routes"]] == [
        ("10.1.0.0/16", "backend"),
        ("10.2.0.0/16", "default"),
    ]
    assert api["allow_debug"] is False
    assert audit_events(any_engine)[-1].action == "apply"

    state = _dump(any_engine)
    second = call(any_engine, "apply", document=DOC)
    assert second["changed"] is False and second["changes"] == []
    assert second["unchanged"] == {"subnet": 2, "category": 1, "entry": 2}
    assert _dump(any_engine) == state  # not even an audit event


def test_apply_converges_and_prunes(any_engine: Engine) -> None:
    call(any_engine, "apply", document=DOC)
    add(any_engine, "stray", H3, "0.0.0.0/0=backend", categories=["old"])
    call(any_engine, "subnets.add", cidr="10.99.0.0/24", name="unused")
    call(any_engine, "subnets.add", cidr="10.98.0.0/24", name="busy")
    with Session(any_engine) as s:
        busy = s.scalars(select(EnclaveSubnet.id).where(EnclaveSubnet.name == "busy")).one()
    with Allocator(any_engine, "gw-test") as allocator:
        allocator.start()
        allocator.lease(
            busy,
            mr_enclave=bytes.fromhex(H3),
            mr_signer=bytes(32),
            host_address=IPv4Address("10.2.0.9"),
            host_port=4000,
        )
    call(any_engine, "allowlist.update", name="nginx", min_isv_svn=9, enabled=False)

    # Without prune: nginx is put back as the file says; nothing is removed.
    back = call(any_engine, "apply", document=DOC)
    assert [(c["name"], sorted(c["fields"])) for c in back["changes"]] == [
        ("nginx", ["enabled", "min_isv_svn"])
    ]
    assert {e["name"] for e in call(any_engine, "allowlist.list")} == {"nginx", "api", "stray"}

    pruned = call(any_engine, "apply", document=DOC, prune=True)
    removed = {(c["object"], c["name"]) for c in pruned["changes"] if c["action"] == "delete"}
    assert removed == {("entry", "stray"), ("category", "old"), ("subnet", "unused")}
    assert pruned["notes"] == [
        "kept subnet 'busy' (10.98.0.0/24): 1 enclave(s) still hold addresses in it; apply "
        "again once their sessions closed"
    ]
    assert call(any_engine, "apply", document=DOC, prune=True)["changes"] == []


def test_apply_moves_an_identity_between_names_only_with_prune(engine: Engine) -> None:
    add(engine, "old-name", H1)
    doc = {"enclave": [{"name": "new-name", "mr_enclave": H1, "host_subnets": ["0.0.0.0/0"]}]}
    error = refused(engine, "apply", document=doc)
    assert error.code == CONFLICT and "enclave 'new-name'" in error.message
    result = call(engine, "apply", document=doc, prune=True)
    assert [(c["action"], c["name"]) for c in result["changes"]] == [
        ("delete", "old-name"),
        ("create", "new-name"),
    ]


def test_apply_reports_every_problem_and_changes_nothing(engine: Engine) -> None:
    doc = {
        "version": 2,
        "subnets": [],
        "subnet": [
            {"cidr": "10.0.0.1/24"},
            {"name": "a", "cidr": "10.1.0.0/24", "default": True},
            {"name": "b", "cidr": "10.2.0.0/24", "default": True},
        ],
        "enclave": [
            {"name": "x", "mr_enclave": "ab", "host_subnets": ["0.0.0.0/0"]},
            {"name": "y", "mr_enclave": H1},
            {"name": "z", "mr_enclave": H2, "host_subnets": ["0.0.0.0/0"], "colour": "red"},
            {"name": "w", "mr_enclave": H3, "host_subnets": ["0.0.0.0/0"]},
            {"name": "w", "mr_enclave": "44" * 32, "host_subnets": ["0.0.0.0/0"]},
        ],
    }
    error = refused(engine, "apply", document=doc)
    assert error.code == INVALID_PARAMS
    problems = error.data["problems"]
    expected = [
        "unknown top-level key(s) subnets",
        "version 2 is not supported",
        "subnet[1] (10.0.0.1/24): cidr '10.0.0.1/24' has host bits set",
        "enclave[1] (x): mr_enclave must be 64 hexadecimal digits",
        "enclave[2] (y): host_subnets is required",
        "enclave[3] (z): unknown parameter(s): colour",
        "enclave named w appears twice",
        "only one subnet can be the default, not a, b",
    ]
    assert len(problems) == len(expected)
    for needle, problem in zip(expected, problems, strict=True):
        assert problem.startswith(needle), (needle, problem)
    assert refused(engine, "apply").code == INVALID_PARAMS
    assert refused(engine, "apply", document={"enclave": {"name": "x"}}).code == INVALID_PARAMS
    assert refused(engine, "apply", document={}, prune="yes").code == INVALID_PARAMS


def test_apply_refuses_changing_a_subnet_in_place(engine: Engine) -> None:
    call(engine, "apply", document=DOC)
    moved = {**DOC, "subnet": [{"name": "backend", "cidr": "10.78.0.0/24"}]}
    error = refused(engine, "apply", document=moved)
    assert error.code == CONFLICT and "cannot change in place" in error.message
    renamed = {**DOC, "subnet": [{"name": "renamed", "cidr": "10.77.0.0/24"}]}
    error = refused(engine, "apply", document=renamed)
    assert error.code == CONFLICT and "under the name 'backend'" in error.message
    # Unnamed subnets are matched by CIDR.
    by_cidr = {"subnet": [{"cidr": "10.77.0.0/24", "description": "changed"}]}
    change = call(engine, "apply", document=by_cidr)["changes"]
    assert [(c["name"], c["fields"]) for c in change] == [("backend", ["description"])]


# -- the schema: migration 0002 ------------------------------------------------------------


def test_migration_0002_keeps_subnets_unmarked(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        migrate(engine, "0001")
        with engine.begin() as conn:
            network, gateway = IPv4Network("10.5.0.0/24"), IPv4Address("10.5.0.1")
            conn.exec_driver_sql(
                "INSERT INTO enclave_subnets (name, description, network, prefix_len, gateway, "
                f"created_at) VALUES ('legacy-1', '', {int(network.network_address)}, 24, "
                f"{int(gateway)}, '2026-01-01 00:00:00.000000')"
            )
        assert migrate(engine) == ("0001", "0002")
        with Session(engine) as s:
            subnet = s.scalars(select(EnclaveSubnet)).one()
            assert subnet.is_default is False
            assert admin.effective_default(s) is subnet
    finally:
        engine.dispose()
