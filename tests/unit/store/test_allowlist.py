"""ORM allowlist rows -> the policy's pure AllowlistEntry values."""

from __future__ import annotations

from ipaddress import IPv4Network

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sengd.policy import AllowlistEntry, HostRoute
from sengd.store.allowlist import load_allowlist
from sengd.store.models import App, Category, HostRouteRow

from .helpers import make_subnet


def _route(cidr: str, subnet_id: int) -> HostRouteRow:
    network = IPv4Network(cidr)
    return HostRouteRow(
        host_network=int(network.network_address),
        host_prefix_len=network.prefixlen,
        enclave_subnet_id=subnet_id,
    )


def test_rows_convert_to_entries(engine: Engine) -> None:
    a = make_subnet(engine, "192.168.28.0/24")
    b = make_subnet(engine, "172.16.28.0/26")
    with Session(engine) as session:
        server, demo = Category(name="server"), Category(name="demo")
        session.add_all(
            [
                App(
                    name="by enclave",
                    mr_enclave=b"\xe1" * 32,
                    mr_signer=b"\x51" * 32,  # informational beside an MRENCLAVE
                    denied_advisories=[],
                    host_routes=[
                        _route("0.0.0.0/0", a),
                        _route("10.0.0.0/8", a),
                        _route("10.1.2.3/32", b),
                        _route("10.1.0.0/16", b),
                        _route("9.0.0.0/8", b),
                    ],
                    categories=[server, demo],
                ),
                App(
                    name="by signer, disabled",
                    mr_signer=b"\x52" * 32,
                    isv_prod_id=7,
                    min_isv_svn=3,
                    enabled=False,
                    allow_debug=True,
                    quote_statuses=["OK", "SW_HARDENING_NEEDED"],
                    tcb_statuses=["UpToDate"],
                    denied_advisories=["INTEL-SA-00334"],
                    host_routes=[_route("127.0.0.0/26", b)],
                ),
            ]
        )
        session.commit()
        entries = load_allowlist(session)

    assert entries[0] == AllowlistEntry(
        id=1,
        name="by enclave",
        mr_enclave=b"\xe1" * 32,
        mr_signer=b"\x51" * 32,
        host_routes=(  # decision order: most specific first, then by network
            HostRoute(IPv4Network("10.1.2.3/32"), b),
            HostRoute(IPv4Network("10.1.0.0/16"), b),
            HostRoute(IPv4Network("9.0.0.0/8"), b),
            HostRoute(IPv4Network("10.0.0.0/8"), a),
            HostRoute(IPv4Network("0.0.0.0/0"), a),
        ),
        categories=("demo", "server"),
    )
    assert entries[1] == AllowlistEntry(
        id=2,
        name="by signer, disabled",
        mr_signer=b"\x52" * 32,
        isv_prod_id=7,
        min_isv_svn=3,
        enabled=False,
        allow_debug=True,
        quote_statuses=frozenset({"OK", "SW_HARDENING_NEEDED"}),
        tcb_statuses=frozenset({"UpToDate"}),
        denied_advisories=frozenset({"INTEL-SA-00334"}),
        host_routes=(HostRoute(IPv4Network("127.0.0.0/26"), b),),
    )


def test_empty_allowlist(engine: Engine) -> None:
    with Session(engine) as session:
        assert load_allowlist(session) == []
