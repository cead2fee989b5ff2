"""Helpers shared by the store tests (unit and integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sengd.store.allocator import Allocator, LeaseGrant
from sengd.store.subnets import add_enclave_subnet

MR_ENCLAVE = bytes(range(32))
MR_SIGNER = bytes(range(32, 64))
HOST = IPv4Address("198.51.100.7")


def make_subnet(
    engine: Engine, cidr: str, gateway: str | None = None, name: str | None = None
) -> int:
    """Add an enclave subnet and return its id."""
    network = IPv4Network(cidr)
    with Session(engine) as session:
        subnet = add_enclave_subnet(
            session,
            network,
            IPv4Address(gateway) if gateway else None,
            name=name or f"net-{cidr}",
        )
        session.commit()
        return subnet.id


def lease(allocator: Allocator, subnet_id: int, port: int = 40000) -> LeaseGrant:
    """Lease an address for a fixed test enclave."""
    return allocator.lease(
        subnet_id, mr_enclave=MR_ENCLAVE, mr_signer=MR_SIGNER, host_address=HOST, host_port=port
    )


class FakeClock:
    """A clock that moves one millisecond per reading (strictly increasing, deterministic)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now
