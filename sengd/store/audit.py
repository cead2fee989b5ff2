"""The audit log: who changed what, when, and the object before and after.

Snapshots are plain JSON objects (hashes as lowercase hex, addresses in dotted/CIDR text), so an
auditor can read them without this software.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from sengd.store.models import App, AuditEvent, Category, EnclaveSubnet


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a Unix uid when known, and a user or component name."""

    uid: int | None
    name: str

    @classmethod
    def local(cls, name: str | None = None) -> Actor:
        """The user running this process; `name` overrides the user name (e.g. a component)."""
        uid = os.getuid()
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = f"uid {uid}"
        return cls(uid=uid, name=name)


def record(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str | int | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Add an audit event to `session` (committed with the change it describes)."""
    event = AuditEvent(
        at=at if at is not None else datetime.now(UTC),
        actor_uid=actor.uid,
        actor_name=actor.name,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        before=before,
        after=after,
    )
    session.add(event)
    return event


def subnet_snapshot(subnet: EnclaveSubnet) -> dict[str, Any]:
    """An enclave subnet as a JSON object."""
    return {
        "id": subnet.id,
        "name": subnet.name,
        "network": str(subnet.cidr),
        "gateway": str(subnet.gateway_address),
        "description": subnet.description,
    }


def category_snapshot(category: Category) -> dict[str, Any]:
    """A category as a JSON object."""
    return {"id": category.id, "name": category.name, "description": category.description}


def app_snapshot(app: App) -> dict[str, Any]:
    """An allowlist entry (with its host routes and categories) as a JSON object."""
    return {
        "id": app.id,
        "name": app.name,
        "mr_enclave": app.mr_enclave.hex() if app.mr_enclave is not None else None,
        "mr_signer": app.mr_signer.hex() if app.mr_signer is not None else None,
        "isv_prod_id": app.isv_prod_id,
        "min_isv_svn": app.min_isv_svn,
        "allow_debug": app.allow_debug,
        "quote_statuses": app.quote_statuses,
        "tcb_statuses": app.tcb_statuses,
        "denied_advisories": app.denied_advisories,
        "enabled": app.enabled,
        "comment": app.comment,
        "host_routes": [
            {"host_subnet": str(route.host_subnet), "enclave_subnet_id": route.enclave_subnet_id}
            for route in app.host_routes
        ],
        "categories": [category.name for category in app.categories],
    }
