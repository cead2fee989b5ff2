"""Which nftables sets exist and which enclave addresses belong in them (pure bookkeeping).

sengd keeps one set of enclave IPv4 addresses per allowlist entry name (`app_<name>`), per
category (`cat_<name>`) and per configured host group (`host_<group>`). This module decides
the set names and the membership; `sengd.net.nft` makes the kernel match.

Name sanitisation (docs/firewall.md repeats it for administrators):
- the name is lowercased; every character other than `a-z`, `0-9` and `_` becomes `_`;
  the result gets the prefix `app_`, `cat_` or `host_`;
- a set name longer than `MAX_SET_NAME` (the kernel's limit for nftables object names) is cut
  and ends in `_` plus the first 8 hex digits of the SHA-256 of the original name;
- when several names give the same set name, the one already in canonical form (lowercase
  `a-z0-9_`), else the first in code-point order, keeps it; every other one gets `_` plus the
  first 8 hex digits of the SHA-256 of its original name appended. A name added while running
  (a session of an entry sengd has not seen yet) never takes a set name already in use; the
  next full sync (start, reload) applies the rule above again.

Allowlist entries that share a name share a set: they are versions of one application.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

MAX_SET_NAME = 255
"""Longest nftables set name (NFT_NAME_MAXLEN is 256 bytes including the NUL)."""

_INVALID = re.compile(r"[^a-z0-9_]")
_CANONICAL = re.compile(r"[a-z0-9_]+")


class Kind(StrEnum):
    """What a set groups enclaves by; the value is the set name prefix."""

    APP = "app"
    CATEGORY = "cat"
    HOST = "host"


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def sanitise(kind: Kind, name: str) -> str:
    """The set name for `name` before collisions are considered (see the module docstring)."""
    base = f"{kind.value}_{_INVALID.sub('_', name.lower())}"
    if len(base) > MAX_SET_NAME:
        base = f"{base[: MAX_SET_NAME - 9]}_{_digest(name)}"
    return base


def _suffixed(kind: Kind, name: str) -> str:
    base = sanitise(kind, name)
    return f"{base[: MAX_SET_NAME - 9]}_{_digest(name)}"


def _preference(name: str) -> tuple[bool, str]:
    return (not _CANONICAL.fullmatch(name), name)


@dataclass(frozen=True, slots=True)
class Member:
    """What the firewall needs to know about one active session."""

    address: IPv4Address
    app: str
    categories: tuple[str, ...]
    host: IPv4Address


@dataclass(frozen=True, slots=True)
class Layout:
    """The set names in use: (kind, original name) -> set name, and the host groups."""

    names: Mapping[tuple[Kind, str], str] = field(default_factory=dict)
    host_groups: tuple[tuple[str, tuple[IPv4Network, ...]], ...] = ()
    collisions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Set names several originals competed for, with those originals (for a warning)."""

    @classmethod
    def build(
        cls,
        apps: Iterable[str],
        categories: Iterable[str],
        host_groups: Iterable[tuple[str, tuple[IPv4Network, ...]]] = (),
    ) -> Layout:
        """The deterministic layout for these names (the rule of the module docstring)."""
        groups = tuple(host_groups)
        wanted = {(Kind.APP, n) for n in apps} | {(Kind.CATEGORY, n) for n in categories}
        wanted |= {(Kind.HOST, name) for name, _ in groups}
        by_base: dict[str, list[tuple[Kind, str]]] = {}
        for kind, name in wanted:
            by_base.setdefault(sanitise(kind, name), []).append((kind, name))
        names: dict[tuple[Kind, str], str] = {}
        collisions = []
        for base, keys in sorted(by_base.items()):
            keys.sort(key=lambda k: _preference(k[1]))
            names[keys[0]] = base
            for key in keys[1:]:
                names[key] = _suffixed(*key)
            if len(keys) > 1:
                collisions.append((base, tuple(k[1] for k in keys)))
        taken: dict[str, tuple[Kind, str]] = {}
        for key, set_name in sorted(names.items()):
            other = taken.get(set_name)
            if other is not None:  # only a name crafted to look like another's suffix
                names[key] = _free(set_name, taken)
            taken[names[key]] = key
        return cls(names, groups, tuple(collisions))

    def with_names(self, kind: Kind, new: Iterable[str]) -> Layout:
        """This layout plus `new` names of `kind`, never renaming a set already in use."""
        missing = sorted({n for n in new if (kind, n) not in self.names}, key=_preference)
        if not missing:
            return self
        names = dict(self.names)
        taken = set(names.values())
        for name in missing:
            candidate = sanitise(kind, name)
            if candidate in taken:
                candidate = _suffixed(kind, name)
            if candidate in taken:
                candidate = _free(candidate, taken)
            names[(kind, name)] = candidate
            taken.add(candidate)
        return Layout(names, self.host_groups, self.collisions)

    def set_names(self) -> frozenset[str]:
        """Every set this layout has."""
        return frozenset(self.names.values())

    def sets_of(self, member: Member) -> frozenset[str]:
        """The sets `member`'s address belongs in. Names missing from the layout are skipped
        (the caller extends the layout first with `with_member`)."""
        keys = [(Kind.APP, member.app)] + [(Kind.CATEGORY, c) for c in member.categories]
        keys += [
            (Kind.HOST, name)
            for name, networks in self.host_groups
            if any(member.host in net for net in networks)
        ]
        return frozenset(self.names[k] for k in keys if k in self.names)

    def with_member(self, member: Member) -> Layout:
        """This layout extended by the app and categories of `member` (see `with_names`)."""
        return self.with_names(Kind.APP, [member.app]).with_names(Kind.CATEGORY, member.categories)


def _free(candidate: str, taken: Iterable[str]) -> str:
    used = set(taken)
    stem = candidate[: MAX_SET_NAME - 6]
    number = 2
    while f"{stem}_{number}" in used:
        number += 1
    return f"{stem}_{number}"


def desired(layout: Layout, members: Iterable[Member]) -> dict[str, frozenset[IPv4Address]]:
    """Set name -> the addresses it must hold, for every set of `layout`."""
    content: dict[str, set[IPv4Address]] = {name: set() for name in layout.set_names()}
    for member in members:
        for name in layout.sets_of(member):
            content[name].add(member.address)
    return {name: frozenset(addresses) for name, addresses in content.items()}


@dataclass(slots=True)
class Ledger:
    """What sengd has put into the kernel: address -> the sets holding it.

    The firewall records an address only after the kernel accepted it, and forgets it only
    after the kernel removed it, so `remove` can name exactly the elements to delete.
    """

    held: dict[IPv4Address, frozenset[str]] = field(default_factory=dict)

    def record(self, address: IPv4Address, sets: frozenset[str]) -> None:
        """`address` is now an element of exactly `sets`."""
        if sets:
            self.held[address] = sets
        else:
            self.held.pop(address, None)

    def sets_holding(self, address: IPv4Address) -> frozenset[str]:
        """The sets `address` was added to (empty if none)."""
        return self.held.get(address, frozenset())

    def forget(self, address: IPv4Address) -> None:
        """`address` is in no set any more."""
        self.held.pop(address, None)

    def replace(self, content: Mapping[str, frozenset[IPv4Address]]) -> None:
        """After a full sync: the kernel holds exactly `content`."""
        held: dict[IPv4Address, set[str]] = {}
        for name, addresses in content.items():
            for address in addresses:
                held.setdefault(address, set()).add(name)
        self.held = {address: frozenset(names) for address, names in held.items()}
