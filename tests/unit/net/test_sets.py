"""Set names and membership (pure): sanitisation, collisions, desired content, the ledger."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from sengd.net.sets import MAX_SET_NAME, Kind, Layout, Ledger, Member, desired, sanitise

VALID = re.compile(r"(app|cat|host)_[a-z0-9_]+")
LAB = ("lab", (IPv4Network("10.0.0.0/8"),))


def member(ip: str, app: str, cats: tuple[str, ...] = (), host: str = "10.1.2.3") -> Member:
    return Member(IPv4Address(ip), app, cats, IPv4Address(host))


def test_sanitise_lowercases_and_replaces_everything_else() -> None:
    assert sanitise(Kind.APP, "demo") == "app_demo"
    assert sanitise(Kind.APP, "SENG-NGINX") == "app_seng_nginx"
    assert sanitise(Kind.CATEGORY, "Server") == "cat_server"
    assert sanitise(Kind.CATEGORY, "Web Server 2.0") == "cat_web_server_2_0"
    assert sanitise(Kind.HOST, "lab") == "host_lab"
    assert sanitise(Kind.APP, "Grüße") == "app_gr__e"


def test_long_names_are_cut_with_a_digest() -> None:
    long_a, long_b = "a" * 300 + "x", "a" * 300 + "y"
    name_a, name_b = sanitise(Kind.APP, long_a), sanitise(Kind.APP, long_b)
    assert len(name_a) == MAX_SET_NAME and len(name_b) == MAX_SET_NAME
    assert name_a != name_b
    assert re.fullmatch(r"app_a+_[0-9a-f]{8}", name_a)


def test_collisions_the_canonical_name_wins_the_others_get_a_digest() -> None:
    layout = Layout.build(["Demo", "demo", "DEMO"], [])
    assert layout.names[(Kind.APP, "demo")] == "app_demo"
    others = {layout.names[(Kind.APP, "Demo")], layout.names[(Kind.APP, "DEMO")]}
    assert all(re.fullmatch(r"app_demo_[0-9a-f]{8}", n) for n in others)
    assert len(others) == 2
    assert layout.collisions == (("app_demo", ("demo", "DEMO", "Demo")),)


def test_collisions_without_a_canonical_name_go_by_code_point_order() -> None:
    layout = Layout.build(["web-app", "web app"], [])
    assert layout.names[(Kind.APP, "web app")] == "app_web_app"  # " " < "-"
    assert layout.names[(Kind.APP, "web-app")].startswith("app_web_app_")


def test_build_is_deterministic_whatever_the_order() -> None:
    names = ["B", "b", "a-b", "a_b", "A B"]
    first = Layout.build(names, ["x", "X"])
    assert Layout.build(list(reversed(names)), ["X", "x"]).names == first.names


def test_a_name_crafted_like_a_digest_suffix_still_gets_its_own_set() -> None:
    plain = Layout.build(["Demo", "demo"], []).names[(Kind.APP, "Demo")]
    crafted = plain.removeprefix("app_")
    layout = Layout.build(["Demo", "demo", crafted], [])
    assert len(set(layout.names.values())) == 3


def test_kinds_never_collide() -> None:
    layout = Layout.build(["lab"], ["lab"], [LAB])
    assert set(layout.names.values()) == {"app_lab", "cat_lab", "host_lab"}


def test_names_added_while_running_never_rename_a_set() -> None:
    layout = Layout.build(["Demo"], [])
    assert layout.names[(Kind.APP, "Demo")] == "app_demo"
    grown = layout.with_names(Kind.APP, ["demo"])
    assert grown.names[(Kind.APP, "Demo")] == "app_demo"
    assert grown.names[(Kind.APP, "demo")].startswith("app_demo_")
    assert layout.with_names(Kind.APP, ["Demo"]) is layout
    # The next full build applies the rule again: the canonical name wins.
    assert Layout.build(["Demo", "demo"], []).names[(Kind.APP, "demo")] == "app_demo"


def test_membership_by_app_categories_and_host_group() -> None:
    layout = Layout.build(["web", "tool"], ["Server", "Batch"], [LAB])
    web = member("192.168.28.2", "web", ("Server",), host="10.0.0.5")
    tool = member("192.168.28.3", "tool", ("Batch", "Server"), host="172.16.0.1")
    assert layout.sets_of(web) == {"app_web", "cat_server", "host_lab"}
    assert layout.sets_of(tool) == {"app_tool", "cat_batch", "cat_server"}
    content = desired(layout, [web, tool])
    assert content == {
        "app_web": {web.address},
        "app_tool": {tool.address},
        "cat_server": {web.address, tool.address},
        "cat_batch": {tool.address},
        "host_lab": {web.address},
    }


def test_unknown_names_are_skipped_until_the_layout_grows() -> None:
    layout = Layout.build(["web"], [])
    stranger = member("192.168.28.9", "new-app", ("Fresh",))
    assert layout.sets_of(stranger) == frozenset()
    grown = layout.with_member(stranger)
    assert grown.sets_of(stranger) == {"app_new_app", "cat_fresh"}


def test_ledger_records_forgets_and_replaces() -> None:
    ledger = Ledger()
    a, b = IPv4Address("192.168.28.2"), IPv4Address("192.168.28.3")
    ledger.record(a, frozenset({"app_x", "cat_y"}))
    assert ledger.sets_holding(a) == {"app_x", "cat_y"}
    ledger.record(a, frozenset())
    assert ledger.sets_holding(a) == frozenset()
    ledger.replace({"app_x": frozenset({a, b}), "cat_y": frozenset({b})})
    assert ledger.sets_holding(b) == {"app_x", "cat_y"}
    ledger.forget(b)
    assert ledger.sets_holding(b) == frozenset() and ledger.sets_holding(a) == {"app_x"}


@given(st.lists(st.text(min_size=1, max_size=300), max_size=12), st.lists(st.text(min_size=1)))
def test_every_layout_gives_distinct_valid_names(apps: list[str], cats: list[str]) -> None:
    layout = Layout.build(apps, cats)
    names = list(layout.names.values())
    assert len(names) == len(set(names)) == len(set(apps)) + len(set(cats))
    for name in names:
        assert VALID.fullmatch(name) and len(name) <= MAX_SET_NAME, name
