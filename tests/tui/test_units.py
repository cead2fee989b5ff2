"""The dashboard's pure parts: state model, field checks, reason words, number formats."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sengadm.tui import reasons, validate
from sengadm.tui.format import compact_bytes, duration, human_bytes, human_rate, since
from sengadm.tui.state import GatewayState
from sengd.attestation.errors import Reason
from sengd.policy import DenialReason
from sengd.tunnel.dtls import CloseReason
from tests.tui import gateway_data
from tests.tui.gateway_data import NOW


def state() -> GatewayState:
    s = GatewayState(lambda: NOW)
    s.link_up(gateway_data.hello())
    return s


# -- reasons ---------------------------------------------------------------------------------


def test_every_denial_code_of_the_daemon_has_words() -> None:
    codes = {r.value for r in Reason} | {r.value for r in DenialReason}
    missing = sorted(c for c in codes if c not in reasons.DENIALS)
    assert missing == []
    assert reasons.explain_denial("not-allowlisted").startswith("no allowlist entry")
    assert reasons.explain_denial("brand-new-code") == "brand-new-code"


def test_every_close_reason_of_the_tunnel_has_words() -> None:
    missing = sorted(r.value for r in CloseReason if r.value not in reasons.SESSION_ENDS)
    assert missing == []
    assert reasons.explain_end("killed") == "closed by an administrator"
    assert reasons.explain_end("bad-ack: too short") == (
        "the enclave sent a malformed address acknowledgement (too short)"
    )
    assert reasons.explain_end("whatever") == "whatever"


# -- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1.0k"),
        (12_400, "12k"),
        (999_400, "999k"),
        (999_600, "1.0M"),
        (7_900_000_000, "7.9G"),
        (3 * 10**15, "3P"),
    ],
)
def test_compact_bytes_fits_five_characters(n: int, text: str) -> None:
    assert compact_bytes(n) == text
    assert len(text) <= 5


def test_human_units_and_durations() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1_234_567) == "1.2 MB"
    assert human_bytes(5 * 10**13) == "50.0 TB"
    assert human_rate(0) == "-"
    assert human_rate(2500) == "2.5 kB/s"
    assert [duration(s) for s in (0, 59, 61, 3599, 3600 * 5 + 120, 86400 * 3 + 3600)] == [
        "0s",
        "59s",
        "1m01s",
        "59m59s",
        "5h02m",
        "3d01h",
    ]
    assert since((NOW - timedelta(minutes=3)).isoformat(), NOW) == "3m00s"
    assert since("not a time", NOW) == "?"


# -- field checks ----------------------------------------------------------------------------


def test_entry_names() -> None:
    assert validate.entry_name("web-2", ["web"]) == "web-2"
    assert validate.entry_name("web", ["web"], own="web") == "web"
    for bad, message in [
        ("", "needs a name"),
        (" web", "no blanks"),
        ("#3", "must not start with '#'"),
        ("web", "exists already"),
        ("a\tb", "no control characters"),
        ("x" * 129, "at most 128"),
    ]:
        with pytest.raises(validate.FieldError, match=message):
            validate.entry_name(bad, ["web"])


def test_measurements_and_numbers() -> None:
    assert validate.measurement("0x" + "AB" * 32, "MRENCLAVE") == "ab" * 32
    assert validate.measurement("  ", "MRENCLAVE") is None
    with pytest.raises(validate.FieldError, match="is required"):
        validate.measurement("", "MRSIGNER", required=True)
    with pytest.raises(validate.FieldError, match=r"64 hex digits .* 62 given"):
        validate.measurement("ab" * 31, "MRENCLAVE")
    with pytest.raises(validate.FieldError, match="'z' is not a hexadecimal digit"):
        validate.measurement("ab" * 31 + "az", "MRENCLAVE")
    assert validate.uint16("0x10", "SVN") == 16
    for bad in ("-1", "65536", "ten"):
        with pytest.raises(validate.FieldError):
            validate.uint16(bad, "SVN")


def test_host_routes_need_known_subnets() -> None:
    subnets = gateway_data.subnets()
    assert validate.host_routes(
        "10.0.0.0/8, 0.0.0.0/0=storage 10.9.0.0/16=172.20.0.0/22", subnets
    ) == ["10.0.0.0/8", "0.0.0.0/0=storage", "10.9.0.0/16=172.20.0.0/22"]
    cases = [
        ("", "at least one host route"),
        ("10.0.0.1/8", "host bits set: the network is 10.0.0.0/8"),
        ("10.0.0.0/33", "not an IPv4 CIDR"),
        ("10.0.0.0/8, 10.0.0.0/8=storage", "given twice"),
        ("10.0.0.0/8=", "nothing after '='"),
        ("10.0.0.0/8=lab", "no enclave subnet 'lab' \\(known: default, storage\\)"),
    ]
    for text, message in cases:
        with pytest.raises(validate.FieldError, match=message):
            validate.host_routes(text, subnets)
    no_default = [{**s, "default": False} for s in subnets]
    with pytest.raises(validate.FieldError, match="no default enclave subnet"):
        validate.host_routes("10.0.0.0/8", no_default)


def test_lists() -> None:
    assert validate.categories("web, db web") == ["db", "web"]
    with pytest.raises(validate.FieldError, match="category '-x'"):
        validate.categories("ok -x")
    assert validate.statuses("", "quote status") is None
    assert validate.statuses("OK GROUP_OUT_OF_DATE", "quote status") == [
        "GROUP_OUT_OF_DATE",
        "OK",
    ]
    with pytest.raises(validate.FieldError, match="not a status name"):
        validate.statuses("OK, 42", "quote status")
    assert validate.advisories("INTEL-SA-00334,INTEL-SA-00161") == [
        "INTEL-SA-00161",
        "INTEL-SA-00334",
    ]
    with pytest.raises(validate.FieldError, match="not an advisory id"):
        validate.advisories("SA/1")


def test_subnet_fields() -> None:
    subnets = gateway_data.subnets()
    net = validate.subnet_network("10.50.0.0/16", subnets)
    assert str(net) == "10.50.0.0/16"
    for text, message in [
        ("192.168.28.0/24", "exists already"),
        ("172.20.2.0/24", "overlaps 172.20.0.0/22"),
        ("10.1.0.0/31", "/8 to /30"),
        ("10.0.0.0/7", "/8 to /30"),
    ]:
        with pytest.raises(validate.FieldError, match=message):
            validate.subnet_network(text, subnets)
    assert validate.gateway("", net) is None
    assert str(validate.gateway("10.50.255.254", net)) == "10.50.255.254"
    for text, message in [
        ("10.51.0.1", "outside 10.50.0.0/16"),
        ("10.50.0.0", "network or broadcast"),
        ("10.50.255.255", "network or broadcast"),
        ("gw", "not an IPv4 address"),
    ]:
        with pytest.raises(validate.FieldError, match=message):
            validate.gateway(text, net)
    assert validate.subnet_name("", subnets, net) == ""
    assert validate.subnet_name("10.50.0.0/16", subnets, net) == "10.50.0.0/16"
    with pytest.raises(validate.FieldError, match="exists already"):
        validate.subnet_name("storage", subnets, net)
    with pytest.raises(validate.FieldError, match="another subnet's CIDR"):
        validate.subnet_name("10.60.0.0/16", subnets, net)


# -- the state model -------------------------------------------------------------------------


def test_events_and_polls_do_not_undo_each_other() -> None:
    s = state()
    sessions = gateway_data.sessions()
    seq = s.event_seq
    # A session goes down after the poll was sent, before its answer arrives.
    s.apply_event("session.down", {**sessions[0], "reason": "close-notify"})
    assert s.load_sessions(sessions, seq)
    assert sessions[0]["enclave_ip"] not in s.sessions
    assert s.ended[sessions[0]["enclave_ip"]]["reason"] == "close-notify"
    # A session comes up after the poll was sent: the poll's answer does not know it yet.
    seq = s.event_seq
    newcomer = gateway_data.session(9, "web", 1, gateway_data.MR_WEB)
    s.apply_event("session.up", newcomer)
    assert not s.load_sessions(sessions[1:], seq) or newcomer["enclave_ip"] in s.sessions
    assert newcomer["enclave_ip"] in s.sessions
    # A later poll is the truth again.
    s.load_sessions(sessions[1:], s.event_seq)
    assert newcomer["enclave_ip"] not in s.sessions
    # The same address reused by a new session (a new id) is shown.
    reused = {**sessions[0], "id": 77}
    version = s.sessions_version
    s.apply_event("session.up", reused)
    assert s.sessions[reused["enclave_ip"]]["id"] == 77 and s.sessions_version > version
    # A down event of an older session on that address does not remove the new one.
    s.apply_event("session.down", {**sessions[0], "reason": "killed"})
    assert s.sessions[reused["enclave_ip"]]["id"] == 77


def test_a_restarted_daemon_may_reuse_session_ids() -> None:
    s = state()
    first = gateway_data.sessions()[0]
    s.apply_event("session.down", {**first, "reason": "shutdown"})
    s.link_down("the daemon closed the connection", 0.5, 1)
    assert not s.connected and s.link.retry_at == NOW + timedelta(seconds=0.5)
    s.link_up(gateway_data.hello())
    assert s.load_sessions([first], s.event_seq)
    assert first["enclave_ip"] in s.sessions


def test_rates_per_minute_come_from_the_stats_samples() -> None:
    s = state()
    assert s.handshakes_per_minute() is None
    for event in gateway_data.stats_events(90):
        s.apply_event("stats", event)
    assert s.handshakes_per_minute() == 24 + 3  # 12 admitted + 12 paired + 3 denied
    assert s.denials_per_minute() == 3
    assert len(s.rx_history) == 90


def test_log_has_denials_in_order_with_words() -> None:
    s = state()
    s.load_denials(gateway_data.denials())
    s.load_denials(gateway_data.denials())  # a reload after reconnecting adds nothing
    denials = [e for e in s.log if e.kind == "denial"]
    assert [e.code for e in denials] == ["svn-too-low", "cert-expired", "not-allowlisted"]
    assert denials[0].words == reasons.DENIALS["svn-too-low"]
    assert s.apply_event(
        "admin.change",
        {"method": "allowlist.remove", "actor": "root", "closed_sessions": ["192.168.28.2"]},
    ) == {"log", "admin"}
    assert s.log[-1].words == "by root, closed 192.168.28.2"
    assert s.apply_event("no.such.event", {}) == set()
    assert s.apply_event("session.up", {"enclave_ip": 5}) == set()


def test_sessions_by_entry_and_subnet() -> None:
    s = state()
    s.load_sessions(gateway_data.sessions(), s.event_seq)
    assert len(s.sessions_of_entry(1)) == 3
    assert [x["app"] for x in s.sessions_in_subnet("172.20.0.0/22")] == ["db"]
    s.load_status(gateway_data.status())
    assert s.uptime_s() == 273_600.0
