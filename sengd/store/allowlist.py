"""The allowlist as the policy sees it: ORM rows -> pure `sengd.policy.AllowlistEntry` values.

The daemon keeps the result in memory and rebuilds it after every change; the forwarding path
never reads the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from sengd.policy import AllowlistEntry, HostRoute
from sengd.store.models import App, HostRouteRow


def host_route_order(route: HostRoute) -> tuple[int, int]:
    """Sort key of the decision order among one entry's host routes.

    Most specific host subnet first (longest prefix), then ascending network address: a host
    inside several of an entry's host subnets is admitted into the enclave subnet of the most
    specific one. (The original servers took the first row in index order, i.e. the lowest
    in_addr value, which is arbitrary for overlapping subnets; see docs/store.md.)
    """
    return (-route.host_subnet.prefixlen, int(route.host_subnet.network_address))


def sorted_host_routes(routes: Iterable[HostRouteRow]) -> tuple[HostRoute, ...]:
    """The rows as `HostRoute` values in decision order."""
    converted = [
        HostRoute(
            host_subnet=IPv4Network((row.host_network, row.host_prefix_len)),
            enclave_subnet_id=row.enclave_subnet_id,
        )
        for row in routes
    ]
    return tuple(sorted(converted, key=host_route_order))


def to_entry(app: App) -> AllowlistEntry:
    """One ORM allowlist row (with its routes and categories loaded) as an `AllowlistEntry`."""
    return AllowlistEntry(
        id=app.id,
        name=app.name,
        host_routes=sorted_host_routes(app.host_routes),
        mr_enclave=app.mr_enclave,
        mr_signer=app.mr_signer,
        isv_prod_id=app.isv_prod_id,
        min_isv_svn=app.min_isv_svn,
        categories=tuple(sorted(category.name for category in app.categories)),
        enabled=app.enabled,
        allow_debug=app.allow_debug,
        quote_statuses=None if app.quote_statuses is None else frozenset(app.quote_statuses),
        tcb_statuses=None if app.tcb_statuses is None else frozenset(app.tcb_statuses),
        denied_advisories=frozenset(app.denied_advisories or ()),
    )


def load_allowlist(session: Session) -> list[AllowlistEntry]:
    """Every allowlist entry, disabled ones included (with `enabled=False`), ordered by id."""
    apps = session.scalars(
        select(App)
        .options(selectinload(App.host_routes), selectinload(App.categories))
        .order_by(App.id)
    )
    return [to_entry(app) for app in apps]
