"""Enclave subnets: validated creation and lookup.

An enclave subnet is usable when its prefix is /8 ... /30 and its gateway address lies strictly
inside it (not the network or broadcast address). Subnets never overlap: an enclave address
must identify one subnet, and through it one application's firewall rules.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from sqlalchemy import select
from sqlalchemy.orm import Session

from sengd.store.errors import InvalidSubnet, UnsupportedPrefix
from sengd.store.models import MAX_ENCLAVE_PREFIX, MIN_ENCLAVE_PREFIX, EnclaveSubnet


def validate_enclave_subnet(network: IPv4Network, gateway: IPv4Address) -> None:
    """Raise unless `network` can be an enclave subnet whose gateway address is `gateway`.

    `UnsupportedPrefix` for a prefix outside /8 ... /30 (a /31 or /32 leaves no address to
    lease), `InvalidSubnet` for a gateway outside the subnet or on its network or broadcast
    address.
    """
    if network.prefixlen > MAX_ENCLAVE_PREFIX:
        raise UnsupportedPrefix(
            f"enclave subnet {network}: a /{network.prefixlen} has no address to lease besides "
            f"the gateway; use /{MAX_ENCLAVE_PREFIX} or shorter"
        )
    if network.prefixlen < MIN_ENCLAVE_PREFIX:
        raise UnsupportedPrefix(
            f"enclave subnet {network}: prefixes shorter than /{MIN_ENCLAVE_PREFIX} are not "
            "supported"
        )
    if gateway not in network:
        raise InvalidSubnet(f"enclave subnet {network}: gateway {gateway} is outside it")
    if gateway in (network.network_address, network.broadcast_address):
        raise InvalidSubnet(
            f"enclave subnet {network}: gateway {gateway} is the network or broadcast address"
        )


def find_subnet(session: Session, network: IPv4Network) -> EnclaveSubnet | None:
    """The enclave subnet that is exactly `network`, if any."""
    return session.scalars(
        select(EnclaveSubnet).where(
            EnclaveSubnet.network == int(network.network_address),
            EnclaveSubnet.prefix_len == network.prefixlen,
        )
    ).one_or_none()


def overlapping_subnets(session: Session, network: IPv4Network) -> list[EnclaveSubnet]:
    """The enclave subnets sharing at least one address with `network`, by id."""
    first = int(network.network_address)
    last = int(network.broadcast_address)
    candidates = session.scalars(
        select(EnclaveSubnet).where(EnclaveSubnet.network <= last).order_by(EnclaveSubnet.id)
    )
    return [s for s in candidates if s.network + (1 << (32 - s.prefix_len)) - 1 >= first]


def add_enclave_subnet(
    session: Session,
    network: IPv4Network,
    gateway: IPv4Address | None = None,
    *,
    name: str,
    description: str = "",
) -> EnclaveSubnet:
    """Add (and flush) an enclave subnet; `gateway` defaults to the first address.

    Raises `UnsupportedPrefix`/`InvalidSubnet` as `validate_enclave_subnet` does, and
    `InvalidSubnet` when it overlaps an existing subnet or its name is taken.
    """
    if gateway is None:
        gateway = network.network_address + 1
    validate_enclave_subnet(network, gateway)
    if not name or len(name) > 64:
        raise InvalidSubnet(f"enclave subnet {network}: name must be 1 to 64 characters")
    clash = overlapping_subnets(session, network)
    if clash:
        others = ", ".join(f"{s.cidr} ({s.name})" for s in clash)
        raise InvalidSubnet(f"enclave subnet {network} overlaps {others}")
    if session.scalars(select(EnclaveSubnet.id).where(EnclaveSubnet.name == name)).first():
        raise InvalidSubnet(f"an enclave subnet named {name!r} exists already")
    subnet = EnclaveSubnet(
        name=name,
        description=description,
        network=int(network.network_address),
        prefix_len=network.prefixlen,
        gateway=int(gateway),
    )
    session.add(subnet)
    session.flush()
    return subnet
