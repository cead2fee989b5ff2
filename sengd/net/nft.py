"""The nftables table sengd owns: per-application sets, the base policy, the admin's rules.

Design (docs/firewall.md explains it to administrators):
- sengd owns one table (`[firewall] table`/`family`, default `inet seng`) entirely. nftables
  sets are local to a table, so the administrator's rules that use the sets live in the same
  table: sengd loads them from `[firewall] rules_file` (nft's own language, loaded inside the
  table with nft's `include`). On shutdown sengd deletes the table, and nothing else.
- Sets `app_<name>`, `cat_<name>`, `host_<group>` (names: `sengd.net.sets`) of type
  ipv4_addr hold the addresses of the active sessions of that allowlist entry name, category or
  client host group. A session's addresses go into all its sets in one transaction when it is
  paired, and out of them in one transaction at teardown, before its lease ends; then the
  conntrack entries of the address are flushed (`sengd.net.conntrack`).
- Start: the table is created afresh in one transaction (a table left by a crashed sengd goes
  in the same transaction), then the rules file is loaded. Reload (SIGHUP, allowlist change):
  in one transaction every set is flushed and refilled from the live sessions, new sets added,
  the base policy chains replaced; then, in a second transaction, the administrator's objects
  are replaced by the rules file's current content (a file nft refuses leaves the running rules
  untouched); sets no longer wanted are deleted last (kept, empty, while a rule still uses one).
- Optional base policy (`uplink`, `masquerade`, `forward_policy`): chains `seng_forward` and
  `seng_postrouting`, the originals' hand-run iptables commands as declared state.

Interface to the kernel: libnftables' JSON (`sengd.net.libnftables`); sengd never formats nft
commands from names, except the fixed reload script, which names the administrator's chains as
the kernel lists them (checked to be plain identifiers) and everything else by numeric handle.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from sengd.config import FirewallSection
from sengd.eventlog import emit
from sengd.net.conntrack import Conntrack, ConntrackError
from sengd.net.libnftables import Nftables, NftError
from sengd.net.sets import Kind, Layout, Ledger, Member, desired
from sengd.tunnel.session import Session

log = logging.getLogger("sengd.firewall")

FORWARD_CHAIN = "seng_forward"
NAT_CHAIN = "seng_postrouting"
BASE_CHAINS = frozenset({FORWARD_CHAIN, NAT_CHAIN})
SET_PREFIXES = tuple(f"{kind.value}_" for kind in Kind)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_SET_REFERENCE = re.compile(r"@((?:app|cat|host)_[a-z0-9_]+)")
# Objects of the administrator's rules a reload can replace: kind -> nft's delete keyword.
_RELOADABLE = {"set": "set", "map": "set", "counter": "counter", "quota": "quota", "limit": "limit"}


class FirewallError(Exception):
    """nftables or conntrack cannot do what the firewall needs (message says what)."""


@dataclass(frozen=True, slots=True)
class LiveState:
    """What the table must reflect: allowlist names, categories, active sessions, subnets."""

    apps: tuple[str, ...]
    categories: tuple[str, ...]
    members: tuple[Member, ...]
    subnets: tuple[IPv4Network, ...]


def member_of(session: Session) -> Member:
    """The firewall's view of an active session."""
    return Member(session.address, session.app, session.categories, IPv4Address(session.host))


# -- JSON builders (pure) ------------------------------------------------------------------


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str, value: str) -> dict[str, Any]:
    return _match({"meta": {"key": key}}, value)


def _in_subnets(field: str, subnets: Iterable[IPv4Network]) -> dict[str, Any]:
    prefixes = [
        {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}} for net in subnets
    ]
    return _match({"payload": {"protocol": "ip", "field": field}}, {"set": prefixes})


class Batch:
    """JSON commands for one transaction on sengd's table."""

    def __init__(self, family: str, table: str) -> None:
        self.family = family
        self.table = table
        self.commands: list[dict[str, Any]] = []

    def _ref(self, **more: Any) -> dict[str, Any]:
        return {"family": self.family, "table": self.table, **more}

    def replace_table(self) -> None:
        """Create the table, deleting any table of that name first (add+delete: never fails)."""
        table = {"family": self.family, "name": self.table}
        self.commands += [{"add": {"table": table}}, {"delete": {"table": table}}]
        self.commands.append({"add": {"table": table}})

    def delete_table(self) -> None:
        """Delete the table if it exists."""
        table = {"family": self.family, "name": self.table}
        self.commands += [{"add": {"table": table}}, {"delete": {"table": table}}]

    def add_set(self, name: str) -> None:
        self.commands.append({"add": {"set": self._ref(name=name, type="ipv4_addr")}})

    def flush_set(self, name: str) -> None:
        self.commands.append({"flush": {"set": self._ref(name=name)}})

    def delete_set(self, name: str) -> None:
        self.commands.append({"delete": {"set": self._ref(name=name)}})

    def add_elements(self, name: str, addresses: Iterable[IPv4Address]) -> None:
        elem = [str(a) for a in sorted(addresses)]
        if elem:
            self.commands.append({"add": {"element": self._ref(name=name, elem=elem)}})

    def delete_elements(self, name: str, addresses: Iterable[IPv4Address]) -> None:
        elem = [str(a) for a in sorted(addresses)]
        if elem:
            self.commands.append({"delete": {"element": self._ref(name=name, elem=elem)}})

    def delete_chain(self, name: str) -> None:
        self.commands.append({"delete": {"chain": self._ref(name=name)}})

    def _chain(self, name: str, kind: str, hook: str, prio: int) -> None:
        chain = self._ref(name=name, type=kind, hook=hook, prio=prio, policy="accept")
        self.commands.append({"add": {"chain": chain}})

    def _rule(self, chain: str, *expr: dict[str, Any]) -> None:
        self.commands.append({"add": {"rule": self._ref(chain=chain, expr=list(expr))}})

    def base_policy(
        self, settings: FirewallSection, interface: str, subnets: tuple[IPv4Network, ...]
    ) -> None:
        """Chains seng_forward (and seng_postrouting with masquerade) for `settings.uplink`."""
        up = settings.uplink
        if not up:
            return
        verdict = {settings.forward_policy: None}
        self._chain(FORWARD_CHAIN, "filter", "forward", 0)
        state = _match({"ct": {"key": "state"}}, ["established", "related"], op="in")
        self._rule(FORWARD_CHAIN, state, {"accept": None})
        if subnets:
            out = (_meta("iifname", interface), _meta("oifname", up))
            back = (_meta("iifname", up), _meta("oifname", interface))
            self._rule(FORWARD_CHAIN, *out, _in_subnets("saddr", subnets), {"accept": None})
            self._rule(FORWARD_CHAIN, *back, _in_subnets("daddr", subnets), {"accept": None})
        self._rule(FORWARD_CHAIN, _meta("iifname", interface), verdict)
        self._rule(FORWARD_CHAIN, _meta("oifname", interface), verdict)
        if settings.masquerade and subnets:
            self._chain(NAT_CHAIN, "nat", "postrouting", 100)
            self._rule(
                NAT_CHAIN, _meta("oifname", up), _in_subnets("saddr", subnets), {"masquerade": None}
            )


def include_script(family: str, table: str, path: str) -> str:
    """nft's language: load the rules file inside the table (path and names are validated)."""
    return f'table {family} {table} {{\ninclude "{path}"\n}}\n'


def replace_admin_script(
    family: str, table: str, objects: list[tuple[str, str, int]], path: str | None
) -> str:
    """Delete the administrator's objects (kind, name, handle) and load `path` again, as one
    transaction. Chains are flushed first so no reference stands in the way of a delete."""
    lines = []
    for kind, name, _handle in objects:
        if kind == "chain":
            if not _IDENTIFIER.fullmatch(name):
                raise FirewallError(f"chain name {name!r} in table {table} cannot be reloaded")
            lines.append(f"flush chain {family} {table} {name}")
    for kind, _name, handle in objects:
        if kind != "chain":
            lines.append(f"delete {_RELOADABLE[kind]} {family} {table} handle {int(handle)}")
    for kind, _name, handle in objects:
        if kind == "chain":
            lines.append(f"delete chain {family} {table} handle {int(handle)}")
    script = "\n".join(lines) + "\n"
    if path is not None:
        script += include_script(family, table, path)
    return script


def referenced_sets(rules: str) -> frozenset[str]:
    """The sengd set names (`@app_...`, `@cat_...`, `@host_...`) a rules file refers to."""
    return frozenset(_SET_REFERENCE.findall(rules))


def sets_in(listing: list[dict[str, Any]]) -> dict[str, frozenset[IPv4Address]]:
    """The ipv4_addr sets with sengd's prefixes in a table listing, with their elements."""
    found: dict[str, frozenset[IPv4Address]] = {}
    for item in listing:
        s = item.get("set")
        if s is None or s.get("type") != "ipv4_addr" or not s["name"].startswith(SET_PREFIXES):
            continue
        found[s["name"]] = frozenset(
            IPv4Address(e) for e in s.get("elem", []) if isinstance(e, str)
        )
    return found


def admin_objects(
    listing: list[dict[str, Any]], own_sets: Collection[str]
) -> list[tuple[str, str, int]]:
    """(kind, name, handle) of every object in the table that sengd did not create."""
    objects = []
    for item in listing:
        for kind, body in item.items():
            if kind in ("table", "rule", "metainfo"):
                continue
            name = body.get("name", "")
            if kind == "chain" and name in BASE_CHAINS:
                continue
            if kind == "set" and name in own_sets:
                continue
            if kind != "chain" and kind not in _RELOADABLE:
                raise FirewallError(
                    f"object {kind} {name!r} in the table cannot be reloaded; restart sengd"
                )
            objects.append((kind, name, int(body["handle"])))
    return objects


# -- the firewall ----------------------------------------------------------------------------


class Firewall:
    """sengd's nftables table and conntrack flushing; a `SessionObserver` of the gateway.

    `open()` checks libnftables, the kernel's nf_tables and conntrack netlink (FirewallError
    otherwise); `start()` builds the table; `session_up`/`session_down` follow the sessions;
    `sync()` converges on reload; `close()` deletes the table. Failures after start are logged,
    never raised into the gateway; a session whose addresses could not be added is handed to
    `on_error` (the daemon closes it: deny by default).
    """

    def __init__(self, settings: FirewallSection, interface: str) -> None:
        self.settings = settings
        self.interface = interface
        self.layout = Layout()
        self.ledger = Ledger()
        self.on_error: Callable[[Session], object] | None = None
        self._nft: Nftables | None = None
        self._conntrack: Conntrack | None = None
        self._subnets: tuple[IPv4Network, ...] = ()
        self._built = False
        self._deferred: set[IPv4Address] = set()

    @property
    def name(self) -> str:
        """`family table`, as nft writes it."""
        return f"{self.settings.family} {self.settings.table}"

    def _batch(self) -> Batch:
        return Batch(self.settings.family, self.settings.table)

    def _run(self, batch: Batch) -> list[dict[str, Any]]:
        if self._nft is None:
            raise FirewallError("the firewall is not open")
        try:
            return self._nft.run(batch.commands)
        except NftError as exc:
            raise FirewallError(f"nftables table {self.name}: {exc}") from exc

    def open(self) -> None:
        """Open libnftables and the conntrack socket; check the kernel supports both."""
        try:
            self._nft = Nftables()
            self._nft.run([{"list": {"tables": {}}}])
        except NftError as exc:
            self.close()
            raise FirewallError(f"nftables unusable: {exc}") from exc
        try:
            self._conntrack = Conntrack()
            self._conntrack.check()
        except ConntrackError as exc:
            self.close()
            raise FirewallError(f"conntrack unusable: {exc}") from exc

    def start(self, state: LiveState, reclaimed: Collection[IPv4Address] = ()) -> None:
        """Build the table afresh for `state`, load the rules file, flush `reclaimed`'s
        conntrack entries. Raises FirewallError (after removing the table) on failure."""
        try:
            self.layout = self._layout(state)
            self._subnets = state.subnets
            content = self._content(state)
            batch = self._batch()
            batch.replace_table()
            for name in sorted(content):
                batch.add_set(name)
                batch.add_elements(name, content[name])
            batch.base_policy(self.settings, self.interface, state.subnets)
            self._built = True
            self._run(batch)
            if self.settings.rules_file is not None:
                self._load_rules(include_script(*self._names(), str(self.settings.rules_file)))
        except FirewallError:
            self.close()
            raise
        self.ledger.replace(content)
        self._warn_collisions()
        self._warn_forwarding()
        self.flush_conntrack(reclaimed)
        emit(log, logging.INFO, "firewall-ready", table=self.name, sets=len(content))

    def _warn_forwarding(self) -> None:
        if not self.settings.uplink:
            return
        try:
            forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        except OSError:
            return
        if forwarding == "0":
            emit(log, logging.WARNING, "ip-forwarding-off", uplink=self.settings.uplink)

    def _content(self, state: LiveState) -> dict[str, frozenset[IPv4Address]]:
        """Every set sengd keeps, with its addresses: the layout's sets, plus empty sets for
        names the rules file uses that nothing gives (so it loads; a warning says which)."""
        content = desired(self.layout, state.members)
        path = self.settings.rules_file
        if path is None:
            return content
        try:
            rules = path.read_text(errors="replace")
        except OSError as exc:
            raise FirewallError(f"rules file {path}: {exc.strerror or exc}") from exc
        unknown = sorted(referenced_sets(rules) - frozenset(content))
        if unknown:
            emit(log, logging.WARNING, "firewall-unknown-sets", sets=",".join(unknown), file=path)
        for name in unknown:
            content[name] = frozenset()
        return content

    def _names(self) -> tuple[str, str]:
        return self.settings.family, self.settings.table

    def _layout(self, state: LiveState) -> Layout:
        apps = set(state.apps) | {m.app for m in state.members}
        categories = set(state.categories) | {c for m in state.members for c in m.categories}
        return Layout.build(apps, categories, tuple(self.settings.host_groups))

    def _warn_collisions(self) -> None:
        for set_name, originals in self.layout.collisions:
            emit(
                log,
                logging.WARNING,
                "firewall-name-collision",
                set=set_name,
                names=",".join(originals),
                winner=originals[0],
            )

    def _load_rules(self, script: str) -> None:
        assert self._nft is not None
        try:
            self._nft.run_native(script)
        except NftError as exc:
            raise FirewallError(f"rules file {self.settings.rules_file}: {exc}") from exc

    # -- sessions ---------------------------------------------------------------------------

    def session_up(self, session: Session) -> None:
        """Put the session's address into its sets (one transaction)."""
        try:
            self.add(member_of(session))
        except FirewallError as exc:
            emit(log, logging.ERROR, "firewall-error", enclave_ip=session.address, reason=str(exc))
            if self.on_error is not None:
                self.on_error(session)

    def session_down(self, session: Session, reason: str) -> None:
        """Take the address out of every set, then flush its conntrack entries. At shutdown
        the flush waits for `close()`, which does all addresses in one pass of the table (no
        address is leased again before that)."""
        self.remove(session.address)
        if reason == "shutdown":
            self._deferred.add(session.address)
        else:
            self.flush_conntrack([session.address])

    def add(self, member: Member) -> None:
        """Add `member`'s address to its sets, creating sets of names not seen yet."""
        layout = self.layout.with_member(member)
        sets = layout.sets_of(member)
        batch = self._batch()
        for name in sorted(layout.set_names() - self.layout.set_names()):
            batch.add_set(name)
        stale = self.ledger.sets_holding(member.address)
        for name in sorted(stale):
            batch.delete_elements(name, [member.address])
        for name in sorted(sets):
            batch.add_elements(name, [member.address])
        self._run(batch)
        self.layout = layout
        self.ledger.record(member.address, sets)

    def remove(self, address: IPv4Address) -> None:
        """Delete `address` from every set holding it. Logged, never raised."""
        sets = self.ledger.sets_holding(address)
        if not sets or self._nft is None:
            self.ledger.forget(address)
            return
        batch = self._batch()
        for name in sorted(sets):
            batch.delete_elements(name, [address])
        try:
            self._run(batch)
        except FirewallError as exc:
            # Someone changed the sets behind our back: remove what is really there.
            emit(log, logging.WARNING, "firewall-retry", enclave_ip=address, reason=str(exc))
            self._remove_everywhere(address)
        self.ledger.forget(address)

    def _remove_everywhere(self, address: IPv4Address) -> None:
        try:
            listing = self._run(self._list())
        except FirewallError as exc:
            emit(log, logging.ERROR, "firewall-error", enclave_ip=address, reason=str(exc))
            return
        for name, members in sets_in(listing).items():
            if address in members:
                batch = self._batch()
                batch.delete_elements(name, [address])
                try:
                    self._run(batch)
                except FirewallError as exc:
                    emit(log, logging.ERROR, "firewall-error", enclave_ip=address, reason=str(exc))

    def flush_conntrack(self, addresses: Collection[IPv4Address]) -> None:
        """Delete the conntrack entries involving `addresses`. Logged, never raised."""
        if self._conntrack is None or not addresses:
            return
        try:
            deleted = self._conntrack.flush(addresses)
        except (ConntrackError, OSError) as exc:
            emit(log, logging.ERROR, "conntrack-flush-failed", reason=str(exc))
            return
        if deleted:
            emit(
                log,
                logging.DEBUG,
                "conntrack-flushed",
                addresses=",".join(sorted(str(a) for a in addresses)),
                entries=deleted,
            )

    # -- reload ---------------------------------------------------------------------------

    def _list(self) -> Batch:
        batch = self._batch()
        batch.commands.append({"list": {"table": {"family": batch.family, "name": batch.table}}})
        return batch

    def sync(self, state: LiveState, settings: FirewallSection | None = None) -> None:
        """Converge on reload: sets exactly equal to `state`, base policy and rules file as in
        `settings` (which must keep `enabled`, `table` and `family`). Raises FirewallError;
        each transaction either happens whole or not at all."""
        if settings is not None:
            fixed = ("enabled", "table", "family")
            if any(getattr(settings, k) != getattr(self.settings, k) for k in fixed):
                raise FirewallError("firewall.enabled, table and family change only on restart")
            self.settings = settings
        listing = self._run(self._list())
        present = sets_in(listing)
        old_sets = self.layout.set_names() | frozenset(present)
        self.layout = self._layout(state)
        self._subnets = state.subnets
        content = self._content(state)
        obsolete = sorted(name for name in old_sets - frozenset(content) if name in present)
        self._run(self._sync_batch(listing, present, content, obsolete))
        self.ledger.replace(content)
        self._warn_collisions()
        objects = admin_objects(listing, old_sets | frozenset(content))
        path = self.settings.rules_file
        if objects or path is not None:
            script = replace_admin_script(
                *self._names(), objects, None if path is None else str(path)
            )
            self._load_rules(script)
        self._delete_sets(obsolete)

    def _sync_batch(
        self,
        listing: list[dict[str, Any]],
        present: Mapping[str, frozenset[IPv4Address]],
        content: Mapping[str, frozenset[IPv4Address]],
        obsolete: Iterable[str],
    ) -> Batch:
        """One transaction: every wanted set refilled, obsolete ones emptied, base chains
        replaced."""
        batch = self._batch()
        for name in sorted(content):
            if name in present:
                batch.flush_set(name)
            else:
                batch.add_set(name)
            batch.add_elements(name, content[name])
        for name in obsolete:
            batch.flush_set(name)
        for item in listing:
            chain = item.get("chain")
            if chain is not None and chain["name"] in BASE_CHAINS:
                batch.delete_chain(chain["name"])
        batch.base_policy(self.settings, self.interface, self._subnets)
        return batch

    def _delete_sets(self, names: Iterable[str]) -> None:
        """Delete sets no longer wanted; one a rule still uses stays (empty)."""
        kept = []
        for name in names:
            batch = self._batch()
            batch.delete_set(name)
            try:
                self._run(batch)
            except FirewallError:
                kept.append(name)
        if kept:
            emit(log, logging.WARNING, "firewall-sets-kept", sets=",".join(kept))

    def contents(self) -> dict[str, frozenset[IPv4Address]]:
        """The kernel's view of sengd's sets (set name -> addresses)."""
        return sets_in(self._run(self._list()))

    def close(self) -> None:
        """Flush conntrack of the addresses of sessions ended by shutdown, delete the table (if
        this object built it) and close the kernel handles."""
        self.flush_conntrack(self._deferred)
        self._deferred.clear()
        if self._nft is not None:
            if self._built:
                batch = self._batch()
                batch.delete_table()
                try:
                    self._nft.run(batch.commands)
                    emit(log, logging.INFO, "firewall-removed", table=self.name)
                except NftError as exc:
                    emit(log, logging.ERROR, "firewall-remove-failed", reason=str(exc))
                self._built = False
            self._nft.close()
            self._nft = None
        if self._conntrack is not None:
            self._conntrack.close()
            self._conntrack = None
        self.ledger = Ledger()
