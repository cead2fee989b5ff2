"""`sengd.policy.decide`: matching, the documented order, every denial reason, scale."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sengd.attestation.evidence import Attributes, Evidence
from sengd.policy import (
    DEFAULT_QUOTE_STATUSES,
    Allowlist,
    AllowlistEntry,
    AllowlistError,
    Decision,
    Denial,
    DenialReason,
    HostRoute,
    PolicyDefaults,
    decide,
)

MRE = hashlib.sha256(b"enclave").digest()
MRS = hashlib.sha256(b"signer").digest()
OTHER = hashlib.sha256(b"other").digest()
HOST = "127.0.0.1"
LOOPBACK = IPv4Network("127.0.0.0/8")
ANY = IPv4Network("0.0.0.0/0")


def evidence(**kw: object) -> Evidence:
    base = Evidence(
        scheme="epid-ias",
        mr_enclave=MRE,
        mr_signer=MRS,
        isv_prod_id=1,
        isv_svn=5,
        cpu_svn=bytes(16),
        misc_select=0,
        attributes=Attributes(flags=0x5, xfrm=0x3),
        report_data=bytes(64),
        quote_body=bytes(432),
        quote_status="OK",
        tcb_status=None,
        advisory_ids=(),
        report_id="1",
        report_timestamp=datetime(2026, 11, 27, tzinfo=UTC),
        key_type="rsa-2048",
        spki_sha256=bytes(32),
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def route(subnet: str | IPv4Network = ANY, subnet_id: int = 1) -> HostRoute:
    return HostRoute(IPv4Network(subnet), subnet_id)


def by_enclave(eid: int = 1, *routes: HostRoute, **kw: object) -> AllowlistEntry:
    return AllowlistEntry(
        id=eid,
        name=f"app{eid}",
        host_routes=routes or (route(),),
        mr_enclave=MRE,
        **kw,  # type: ignore[arg-type]
    )


def by_signer(eid: int = 2, *routes: HostRoute, **kw: object) -> AllowlistEntry:
    kw.setdefault("isv_prod_id", 1)
    return AllowlistEntry(
        id=eid,
        name=f"signer{eid}",
        host_routes=routes or (route(),),
        mr_signer=MRS,
        **kw,  # type: ignore[arg-type]
    )


def denial(verdict: Decision | Denial) -> str:
    assert isinstance(verdict, Denial), verdict
    return verdict.reason


def test_mrenclave_match() -> None:
    verdict = decide(evidence(), HOST, Allowlist([by_enclave(1, route(LOOPBACK, 7))]))
    assert isinstance(verdict, Decision)
    assert (verdict.entry.id, verdict.enclave_subnet_id, verdict.matched_by) == (1, 7, "mr_enclave")


def test_signer_match_with_minimum_svn() -> None:
    allow = Allowlist([by_signer(2, min_isv_svn=5)])
    verdict = decide(evidence(mr_enclave=OTHER), HOST, allow)
    assert isinstance(verdict, Decision) and verdict.matched_by == "signer"
    assert denial(decide(evidence(mr_enclave=OTHER, isv_svn=4), HOST, allow)) == "svn-too-low"
    assert denial(decide(evidence(isv_prod_id=2), HOST, allow)) == "not-allowlisted"
    assert denial(decide(evidence(mr_signer=OTHER), HOST, allow)) == "not-allowlisted"


def test_not_allowlisted_and_empty() -> None:
    verdict = decide(evidence(), HOST, Allowlist())
    assert denial(verdict) == DenialReason.NOT_ALLOWLISTED
    assert isinstance(verdict, Denial) and MRE.hex() in verdict.message


def test_host_not_allowed() -> None:
    allow = Allowlist([by_enclave(1, route("10.0.0.0/8"))])
    assert denial(decide(evidence(), HOST, allow)) == "host-not-allowed"
    assert isinstance(decide(evidence(), "10.1.2.3", allow), Decision)
    # an entry without routes admits nobody, but the enclave is known
    unrouted = Allowlist([AllowlistEntry(id=1, name="x", host_routes=(), mr_enclave=MRE)])
    assert denial(decide(evidence(), HOST, unrouted)) == "host-not-allowed"


def test_global_host_subnets() -> None:
    allow = Allowlist([by_enclave()])
    defaults = PolicyDefaults(host_subnets=(IPv4Network("10.0.0.0/8"),))
    assert denial(decide(evidence(), HOST, allow, defaults)) == "host-not-allowed"
    assert isinstance(decide(evidence(), "10.9.9.9", allow, defaults), Decision)


def test_mrenclave_entries_win_over_signer_entries() -> None:
    allow = Allowlist([by_signer(1, route(LOOPBACK, 10)), by_enclave(2, route(ANY, 20))])
    verdict = decide(evidence(), HOST, allow)
    assert isinstance(verdict, Decision)
    assert (verdict.entry.id, verdict.enclave_subnet_id) == (2, 20)


def test_most_specific_host_prefix_then_lower_id() -> None:
    allow = Allowlist(
        [
            by_enclave(5, route("127.0.0.0/8", 1)),
            by_enclave(6, route("127.0.0.0/24", 2), route("127.0.0.0/30", 3)),
            by_enclave(4, route("127.0.0.0/24", 4)),
        ]
    )

    def subnet(host: str) -> int:
        verdict = decide(evidence(), host, allow)
        assert isinstance(verdict, Decision)
        return verdict.enclave_subnet_id

    assert subnet("127.0.0.1") == 3  # /30 of entry 6
    assert subnet("127.0.0.9") == 4  # /24: entry 4 before entry 6
    assert subnet("127.1.0.1") == 1  # only the /8
    # the order does not depend on the order entries were given in
    shuffled = Allowlist(reversed(allow.entries))
    for host in ("127.0.0.1", "127.0.0.9", "127.1.0.1"):
        assert decide(evidence(), host, shuffled) == decide(evidence(), host, allow)


def test_disabled_entry_falls_through() -> None:
    allow = Allowlist([by_enclave(1, enabled=False), by_signer(2)])
    verdict = decide(evidence(), HOST, allow)
    assert isinstance(verdict, Decision) and verdict.entry.id == 2
    only_disabled = Allowlist([by_enclave(1, enabled=False)])
    assert denial(decide(evidence(), HOST, only_disabled)) == "entry-disabled"


def test_first_refusal_is_reported() -> None:
    # two candidates refuse for different reasons: the first in decision order is reported
    allow = Allowlist(
        [
            by_enclave(1, route("127.0.0.0/8"), min_isv_svn=9),
            by_enclave(2, route("127.0.0.0/24"), enabled=False),
        ]
    )
    verdict = decide(evidence(), HOST, allow)
    assert denial(verdict) == "entry-disabled"
    assert isinstance(verdict, Denial) and verdict.entry_id == 2


def test_debug_enclaves() -> None:
    debug = evidence(attributes=Attributes(flags=0x7, xfrm=0x3))
    assert denial(decide(debug, HOST, Allowlist([by_enclave()]))) == "debug-enclave"
    assert isinstance(decide(debug, HOST, Allowlist([by_enclave(allow_debug=True)])), Decision)
    globally = PolicyDefaults(allow_debug=True)
    assert isinstance(decide(debug, HOST, Allowlist([by_enclave()]), globally), Decision)
    assert denial(decide(debug, HOST, Allowlist([by_enclave(allow_debug=False)]), globally)) == (
        "debug-enclave"
    )


@pytest.mark.parametrize(
    ("status", "accepted_by_default"),
    [
        ("OK", True),
        ("GROUP_OUT_OF_DATE", True),
        ("CONFIGURATION_NEEDED", False),
        ("SW_HARDENING_NEEDED", False),
        ("CONFIGURATION_AND_SW_HARDENING_NEEDED", False),
    ],
)
def test_quote_statuses(status: str, accepted_by_default: bool) -> None:
    ev = evidence(quote_status=status)
    verdict = decide(ev, HOST, Allowlist([by_enclave()]))
    assert isinstance(verdict, Decision) is accepted_by_default
    if not accepted_by_default:
        assert denial(verdict) == "quote-status-rejected"
    opt_in = by_enclave(quote_statuses=DEFAULT_QUOTE_STATUSES | {status})
    assert isinstance(decide(ev, HOST, Allowlist([opt_in])), Decision)
    globally = PolicyDefaults(quote_statuses=frozenset({status}))
    assert isinstance(decide(ev, HOST, Allowlist([by_enclave()]), globally), Decision)


def test_tcb_status_for_dcap_evidence() -> None:
    dcap = evidence(scheme="dcap", tcb_status="OutOfDate", quote_status="OutOfDate")
    assert denial(decide(dcap, HOST, Allowlist([by_enclave()]))) == "tcb-status-rejected"
    allowed = by_enclave(tcb_statuses=frozenset({"OutOfDate"}))
    assert isinstance(decide(dcap, HOST, Allowlist([allowed])), Decision)


def test_denied_advisories() -> None:
    ev = evidence(advisory_ids=("INTEL-SA-00334", "INTEL-SA-00615"))
    assert isinstance(decide(ev, HOST, Allowlist([by_enclave()])), Decision)
    entry = by_enclave(denied_advisories=frozenset({"INTEL-SA-00615"}))
    verdict = decide(ev, HOST, Allowlist([entry]))
    assert denial(verdict) == "advisory-denied"
    assert isinstance(verdict, Denial) and "INTEL-SA-00615" in verdict.message
    globally = PolicyDefaults(denied_advisories=frozenset({"INTEL-SA-00334"}))
    assert denial(decide(ev, HOST, Allowlist([by_enclave()]), globally)) == "advisory-denied"


def test_order_of_entry_checks() -> None:
    # disabled, svn, debug, status, advisories: each hides the ones after it
    ev = evidence(
        isv_svn=1,
        attributes=Attributes(flags=0x7, xfrm=0),
        quote_status="SW_HARDENING_NEEDED",
        advisory_ids=("X",),
    )
    entry = by_enclave(enabled=False, min_isv_svn=2, denied_advisories=frozenset({"X"}))
    steps = ["entry-disabled", "svn-too-low", "debug-enclave", "quote-status-rejected"]
    fixes = [
        {"enabled": True},
        {"min_isv_svn": 0},
        {"allow_debug": True},
        {"quote_statuses": frozenset({"SW_HARDENING_NEEDED"})},
    ]
    for expected, fix in zip(steps, fixes, strict=True):
        assert denial(decide(ev, HOST, Allowlist([entry]))) == expected
        entry = dataclasses.replace(entry, **fix)  # type: ignore[arg-type]
    assert denial(decide(ev, HOST, Allowlist([entry]))) == "advisory-denied"


def test_mrenclave_entry_signer_fields_are_informational() -> None:
    # legacy rows store an MRSIGNER that the originals never checked
    entry = by_enclave(mr_signer=OTHER)
    assert isinstance(decide(evidence(), HOST, Allowlist([entry])), Decision)


def test_host_as_address_or_string() -> None:
    allow = Allowlist([by_enclave(1, route(LOOPBACK))])
    assert decide(evidence(), IPv4Address(HOST), allow) == decide(evidence(), HOST, allow)


@pytest.mark.parametrize(
    "entry",
    [
        AllowlistEntry(id=1, name="none", host_routes=()),
        AllowlistEntry(id=1, name="short", host_routes=(), mr_enclave=b"x"),
        AllowlistEntry(id=1, name="signer only", host_routes=(), mr_signer=MRS),
        AllowlistEntry(id=1, name="prod only", host_routes=(), isv_prod_id=1),
        AllowlistEntry(id=1, name="short signer", host_routes=(), mr_signer=b"x", isv_prod_id=1),
        AllowlistEntry(id=1, name="prod", host_routes=(), mr_signer=MRS, isv_prod_id=70000),
        AllowlistEntry(id=1, name="svn", host_routes=(), mr_enclave=MRE, min_isv_svn=-1),
        AllowlistEntry(
            id=1,
            name="status",
            host_routes=(),
            mr_enclave=MRE,
            quote_statuses=frozenset({"GROUP_REVOKED"}),
        ),
        AllowlistEntry(
            id=1, name="tcb", host_routes=(), mr_enclave=MRE, tcb_statuses=frozenset({"Revoked"})
        ),
    ],
)
def test_invalid_entries(entry: AllowlistEntry) -> None:
    with pytest.raises(AllowlistError, match="allowlist entry 1"):
        Allowlist([entry])


def test_duplicate_ids() -> None:
    with pytest.raises(AllowlistError, match="twice"):
        Allowlist([by_enclave(1), by_signer(1)])


def test_allowlist_is_an_immutable_sequence_by_id() -> None:
    allow = Allowlist([by_signer(3), by_enclave(1)])
    assert [e.id for e in allow] == [1, 3]
    assert len(allow) == 2
    with pytest.raises(AttributeError):
        allow.extra = 1  # type: ignore[attr-defined]


def _big_allowlist(n: int) -> Allowlist:
    entries = []
    for i in range(n):
        digest = hashlib.sha256(i.to_bytes(4, "big")).digest()
        routes = (route(f"10.{i % 256}.0.0/16", i), route("127.0.0.0/8", i + 1))
        if i % 2:
            entries.append(
                AllowlistEntry(id=i, name=f"e{i}", host_routes=routes, mr_enclave=digest)
            )
        else:
            entries.append(
                AllowlistEntry(
                    id=i, name=f"s{i}", host_routes=routes, mr_signer=digest, isv_prod_id=i % 7
                )
            )
    entries.append(by_enclave(n + 1, route(LOOPBACK, 99)))
    return Allowlist(entries)


def test_decision_against_10000_entries_is_fast() -> None:
    allow = _big_allowlist(10_000)
    ev = evidence()
    verdict = decide(ev, HOST, allow)
    assert isinstance(verdict, Decision) and verdict.enclave_subnet_id == 99
    unknown = evidence(mr_enclave=OTHER, mr_signer=OTHER)
    runs = 2000
    start = time.process_time()
    for _ in range(runs):
        decide(ev, HOST, allow)
        decide(unknown, HOST, allow)
    per_decision = (time.process_time() - start) / (2 * runs)
    assert per_decision < 50e-6, f"{per_decision * 1e6:.1f} µs per decision"


@settings(max_examples=200, deadline=None)
@given(
    host=st.ip_addresses(v=4),
    svn=st.integers(0, 0xFFFF),
    flags=st.integers(0, 0xFF),
    status=st.sampled_from(["OK", "GROUP_OUT_OF_DATE", "SW_HARDENING_NEEDED", "X"]),
    prefixes=st.lists(st.integers(0, 32), min_size=1, max_size=4),
)
def test_decide_is_total_and_consistent(
    host: IPv4Address, svn: int, flags: int, status: str, prefixes: list[int]
) -> None:
    routes = tuple(
        HostRoute(IPv4Network((int(host) >> (32 - p) << (32 - p) if p else 0, p)), p)
        for p in prefixes
    )
    allow = Allowlist([by_enclave(1, *routes, min_isv_svn=100)])
    ev = evidence(isv_svn=svn, attributes=Attributes(flags, 0), quote_status=status)
    verdict = decide(ev, host, allow)
    if isinstance(verdict, Decision):
        assert verdict.enclave_subnet_id == max(prefixes)  # the most specific route
        assert svn >= 100 and not flags & 0x2 and status in DEFAULT_QUOTE_STATUSES
    else:
        assert verdict.reason in {r.value for r in DenialReason}
