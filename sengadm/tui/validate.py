"""Checks of the dashboard's form fields before anything is sent (pure, no Textual).

Each check takes the field's text (and what it must be consistent with: the entries and
subnets the dashboard knows) and returns the parsed value or raises `FieldError` with a message
for the operator. They mirror the daemon's own validation (sengd/store/admin.py), which stays
the authority: whatever slips through here is refused there with a precise message, and the
form shows that message too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network
from typing import Any

HASH_HEX_DIGITS = 64
MAX_ENTRY_NAME = 128
MAX_SUBNET_NAME = 64
MAX_CATEGORY_NAME = 64
MIN_ENCLAVE_PREFIX = 8
MAX_ENCLAVE_PREFIX = 30

_HEX = re.compile(r"[0-9a-fA-F]*")
_CATEGORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_STATUS = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ADVISORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class FieldError(ValueError):
    """A field's value is wrong; the message says how, for the operator."""


def split_list(text: str) -> list[str]:
    """Items separated by commas or blanks, empty ones left out."""
    return [item for item in re.split(r"[\s,]+", text.strip()) if item]


def _name(text: str, what: str, limit: int) -> str:
    if not text:
        raise FieldError(f"a {what} needs a name")
    if len(text) > limit:
        raise FieldError(f"at most {limit} characters ({len(text)} given)")
    if text != text.strip():
        raise FieldError("no blanks at the start or end")
    if any(not ch.isprintable() for ch in text):
        raise FieldError("no control characters")
    if text.startswith("#"):
        raise FieldError("must not start with '#' (that means an id)")
    return text


def entry_name(text: str, taken: Iterable[str], own: str | None = None) -> str:
    """An allowlist entry name: non-empty, printable, unique among `taken` (bar `own`)."""
    name = _name(text, "entry", MAX_ENTRY_NAME)
    if name != own and name in set(taken):
        raise FieldError(f"an entry named {name!r} exists already")
    return name


def measurement(text: str, what: str, *, required: bool = False) -> str | None:
    """A 32-byte measurement (MRENCLAVE, MRSIGNER) as 64 hex digits (`0x` allowed); None if
    blank and not `required`."""
    text = text.strip()
    if not text:
        if required:
            raise FieldError(f"{what} is required")
        return None
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    if not _HEX.fullmatch(digits):
        bad = next(ch for ch in digits if not _HEX.fullmatch(ch))
        raise FieldError(f"{what}: {bad!r} is not a hexadecimal digit")
    if len(digits) != HASH_HEX_DIGITS:
        raise FieldError(
            f"{what} must be {HASH_HEX_DIGITS} hex digits (32 bytes), {len(digits)} given"
        )
    return digits.lower()


def uint16(text: str, what: str, *, required: bool = False) -> int | None:
    """An integer 0..65535 (ISV product id, SVN); None if blank and not `required`."""
    text = text.strip()
    if not text:
        if required:
            raise FieldError(f"{what} is required")
        return None
    try:
        value = int(text, 0)
    except ValueError:
        raise FieldError(f"{what}: {text!r} is not a number") from None
    if not 0 <= value <= 0xFFFF:
        raise FieldError(f"{what} must be 0..65535")
    return value


def network(text: str, what: str) -> IPv4Network:
    """An IPv4 network in CIDR notation; host bits set are refused, naming the network meant."""
    text = text.strip()
    try:
        return IPv4Network(text)
    except ValueError:
        try:
            meant = IPv4Network(text, strict=False)
        except ValueError:
            raise FieldError(f"{what} {text!r} is not an IPv4 CIDR (like 10.0.0.0/24)") from None
        raise FieldError(f"{what} {text!r} has host bits set: the network is {meant}") from None


def subnet_ref(ref: str, subnets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The known enclave subnet named `ref`, else the one whose CIDR is `ref`."""
    for subnet in subnets:
        if subnet.get("name") == ref:
            return subnet
    try:
        wanted = IPv4Network(ref)
    except ValueError:
        wanted = None
    for subnet in subnets:
        if wanted is not None and subnet.get("network") == str(wanted):
            return subnet
    known = ", ".join(str(s.get("name")) for s in subnets) or "none"
    raise FieldError(f"no enclave subnet {ref!r} (known: {known})")


def host_routes(text: str, subnets: Sequence[dict[str, Any]]) -> list[str]:
    """Host routes `CIDR` or `CIDR=SUBNET`, separated by commas or blanks.

    Every CIDR must be a network, every SUBNET a known enclave subnet (by name or CIDR); a
    route without `=SUBNET` leads to the default subnet, so one must exist. At least one route;
    no host subnet twice.
    """
    items = split_list(text)
    if not items:
        raise FieldError("at least one host route (0.0.0.0/0 admits clients on any host)")
    routes: list[str] = []
    seen: set[IPv4Network] = set()
    for item in items:
        host_text, sep, ref = item.partition("=")
        host = network(host_text, "host subnet")
        if host in seen:
            raise FieldError(f"host subnet {host} is given twice")
        seen.add(host)
        if sep:
            if not ref:
                raise FieldError(f"{item!r}: nothing after '='")
            subnet_ref(ref, subnets)
            routes.append(f"{host}={ref}")
        else:
            if subnets and not any(s.get("default") for s in subnets):
                raise FieldError(f"{host}: no default enclave subnet; write {host}=SUBNET")
            routes.append(str(host))
    return routes


def categories(text: str) -> list[str]:
    """Category names (letters, digits, `_.-`), separated by commas or blanks."""
    names = split_list(text)
    for name in names:
        if len(name) > MAX_CATEGORY_NAME or not _CATEGORY.fullmatch(name):
            raise FieldError(
                f"category {name!r}: letters, digits, '_', '.' or '-', starting with a letter "
                "or digit"
            )
    return sorted(set(names))


def statuses(text: str, what: str) -> list[str] | None:
    """Status names (like OK, GROUP_OUT_OF_DATE); None (the defaults) when blank."""
    names = split_list(text)
    if not names:
        return None
    for name in names:
        if not _STATUS.fullmatch(name):
            raise FieldError(f"{what}: {name!r} is not a status name")
    return sorted(set(names))


def advisories(text: str) -> list[str]:
    """Advisory ids (INTEL-SA-00334), separated by commas or blanks."""
    names = split_list(text)
    for name in names:
        if len(name) > 64 or not _ADVISORY.fullmatch(name):
            raise FieldError(f"{name!r} is not an advisory id (like INTEL-SA-00334)")
    return sorted(set(names))


def subnet_network(text: str, subnets: Sequence[dict[str, Any]]) -> IPv4Network:
    """A new enclave subnet: a CIDR of /8../30 that is not and overlaps no known subnet."""
    net = network(text, "subnet")
    if not MIN_ENCLAVE_PREFIX <= net.prefixlen <= MAX_ENCLAVE_PREFIX:
        raise FieldError(
            f"/{net.prefixlen}: enclave subnets are /{MIN_ENCLAVE_PREFIX} to /{MAX_ENCLAVE_PREFIX}"
        )
    for subnet in subnets:
        other = IPv4Network(str(subnet.get("network")))
        if other == net:
            raise FieldError(f"{net} exists already (as {subnet.get('name')!r})")
        if other.overlaps(net):
            raise FieldError(f"{net} overlaps {other} ({subnet.get('name')!r})")
    return net


def gateway(text: str, net: IPv4Network | None) -> IPv4Address | None:
    """The gateway address of a subnet: blank (the first address) or an address inside `net`
    that is neither its network nor its broadcast address."""
    text = text.strip()
    if not text:
        return None
    try:
        address = IPv4Address(text)
    except ValueError:
        raise FieldError(f"{text!r} is not an IPv4 address") from None
    if net is not None:
        if address not in net:
            raise FieldError(f"{address} is outside {net}")
        if address in (net.network_address, net.broadcast_address):
            raise FieldError(f"{address} is the network or broadcast address of {net}")
    return address


def subnet_name(text: str, subnets: Sequence[dict[str, Any]], net: IPv4Network | None) -> str:
    """A subnet name: blank (named after its CIDR), else unique and not another CIDR."""
    text = text.strip()
    if not text:
        return ""
    name = _name(text, "subnet", MAX_SUBNET_NAME)
    if any(s.get("name") == name for s in subnets):
        raise FieldError(f"a subnet named {name!r} exists already")
    try:
        named = IPv4Network(name)
    except ValueError:
        return name
    if net is not None and named != net:
        raise FieldError(f"{name!r} is another subnet's CIDR")
    return name
