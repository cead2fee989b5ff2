"""The RPC methods of a running gateway: live state, session control and the store's methods.

Live methods read the gateway's memory (sessions, counters, denials). Store methods
(`sengd.store.admin.STORE_METHODS`: allowlist, subnets, categories, audit, apply) run in one
database transaction with the caller as the audit actor; after a successful write the daemon
applies the change at once (`Daemon.apply_store_change`): a removed or disabled entry closes
every session it admitted, and the closed sessions are listed in the answer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING, Any

from sengd import __version__
from sengd.attestation.evidence import Evidence
from sengd.daemon import ReloadError
from sengd.rpc.protocol import (
    CONFLICT,
    INVALID_PARAMS,
    NOT_FOUND,
    PROTOCOL_VERSION,
    Params,
    RpcError,
)
from sengd.rpc.server import ADMIN, MONITOR, Caller, Method
from sengd.store.admin import STORE_METHODS
from sengd.store.audit import Actor, record
from sengd.store.db import session_factory
from sengd.tunnel.session import Session

if TYPE_CHECKING:
    from sengd.daemon import Daemon
    from sengd.dataplane.gateway import Gateway


def evidence_json(evidence: Evidence, now: datetime) -> dict[str, Any]:
    """The verified evidence of a session, as shown to operators."""
    return {
        "scheme": evidence.scheme,
        "mr_enclave": evidence.mr_enclave.hex(),
        "mr_signer": evidence.mr_signer.hex(),
        "isv_prod_id": evidence.isv_prod_id,
        "isv_svn": evidence.isv_svn,
        "debug": evidence.attributes.debug,
        "quote_status": evidence.quote_status,
        "tcb_status": evidence.tcb_status,
        "advisory_ids": list(evidence.advisory_ids),
        "report_id": evidence.report_id,
        "report_timestamp": evidence.report_timestamp.isoformat(),
        "report_age_s": round((now - evidence.report_timestamp).total_seconds(), 1),
        "key_type": evidence.key_type,
        "spki_sha256": evidence.spki_sha256.hex(),
    }


def session_json(
    session: Session, rates: dict[int, tuple[float, float]], now: datetime
) -> dict[str, Any]:
    """One session as the RPC and `sengadm session list --json` show it."""
    c = session.counters
    rx_rate, tx_rate = rates.get(session.id, (0.0, 0.0))
    return {
        "id": session.id,
        "enclave_ip": str(session.address),
        "subnet": str(session.network),
        "app": session.app,
        "entry_id": session.entry_id,
        "categories": list(session.categories),
        "state": session.state.value,
        "host": session.host,
        "host_port": session.tunnel1[1],
        "since": session.started_at.isoformat(),
        "rx_bytes": c.rx_bytes,
        "rx_packets": c.rx_packets,
        "tx_bytes": c.tx_bytes,
        "tx_packets": c.tx_packets,
        "rx_bytes_per_s": round(rx_rate, 1),
        "tx_bytes_per_s": round(tx_rate, 1),
        "drops": dict(c.drops),
        **evidence_json(session.evidence, now),
    }


class LiveMethods:
    """The method table of one daemon. Build with `LiveMethods(daemon).table()`."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.started = time.monotonic()

    @property
    def gateway(self) -> Gateway:
        gateway = self.daemon.gateway
        if gateway is None:  # pragma: no cover - the server only runs with a gateway
            raise RpcError(INVALID_PARAMS, "the gateway is not running")
        return gateway

    def table(self) -> dict[str, Method]:
        methods = {
            "rpc.hello": Method(MONITOR, self.hello, "protocol version and who you are"),
            "rpc.methods": Method(MONITOR, self.list_methods, "every method with its role"),
            "status": Method(MONITOR, self.status, "gateway state and counters"),
            "sessions.list": Method(MONITOR, self.sessions_list, "live sessions"),
            "sessions.get": Method(MONITOR, self.sessions_get, "one session {enclave_ip}"),
            "sessions.kill": Method(
                ADMIN, self.sessions_kill, "close a session {enclave_ip, reason}"
            ),
            "denials.recent": Method(MONITOR, self.denials, "recent denials {limit?}"),
            "config.reload": Method(ADMIN, self.reload, "reload config and allowlist"),
        }
        for name, store_method in STORE_METHODS.items():
            methods[name] = Method(
                store_method.role,
                self._store_handler(name),
                store_method.summary,
            )
        self._methods = methods
        return methods

    # -- live ------------------------------------------------------------------------------

    def hello(self, params: Params, caller: Caller) -> dict[str, Any]:
        params.done()
        return {
            "protocol": PROTOCOL_VERSION,
            "version": __version__,
            "gateway": self.daemon.config.gateway.id,
            "user": caller.name,
            "uid": caller.uid,
            "role": caller.role,
        }

    def list_methods(self, params: Params, caller: Caller) -> list[dict[str, str]]:
        params.done()
        rows = [
            {"method": name, "role": m.role, "summary": m.summary}
            for name, m in sorted(self._methods.items())
        ]
        rows += [
            {"method": "events.subscribe", "role": MONITOR, "summary": "stream events"},
            {"method": "events.unsubscribe", "role": MONITOR, "summary": "stop the stream"},
        ]
        return rows

    def status(self, params: Params, caller: Caller) -> dict[str, Any]:
        params.done()
        gw = self.gateway
        cfg = self.daemon.config
        counters = gw.status()
        totals = gw.traffic_totals()
        return {
            "version": __version__,
            "gateway": cfg.gateway.id,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "started_at": gw.started_at.isoformat(),
            "listen": f"{cfg.tunnel.address}:{cfg.tunnel.port}",
            "listen_tunnel2": f"{cfg.tunnel.address}:{cfg.tunnel.port + 1}",
            "interface": cfg.interface.name,
            "mode": "allow-any-attested" if cfg.attestation.allow_any_attested else "allowlist",
            "allowlist_entries": len(gw.allowlist),
            "sessions": counters["sessions"],
            "active_sessions": counters["active"],
            "pending_handshakes": sum(lst.pending_count for lst in gw.listeners),
            "handshake_workers": (
                self.daemon.handshakes.status() if self.daemon.handshakes is not None else []
            ),
            "handshakes": counters["handshakes"],
            "drops": counters["drops"],
            "listener_drops": counters["listener_drops"],
            **totals,
        }

    def sessions_list(self, params: Params, caller: Caller) -> list[dict[str, Any]]:
        app = params.get_str("app")
        params.done()
        now = datetime.now(UTC)
        return [
            session_json(s, self.daemon.rates, now)
            for s in self.gateway.sessions()
            if app is None or s.app == app
        ]

    def _find(self, params: Params) -> Session:
        text = params.required_str("enclave_ip")
        try:
            address = IPv4Address(text)
        except ValueError:
            raise RpcError(INVALID_PARAMS, f"{text!r} is not an IPv4 address") from None
        for session in self.gateway.sessions():
            if session.address == address:
                return session
        raise RpcError(NOT_FOUND, f"no session holds {address}")

    def sessions_get(self, params: Params, caller: Caller) -> dict[str, Any]:
        session = self._find(params)
        params.done()
        return session_json(session, self.daemon.rates, datetime.now(UTC))

    def sessions_kill(self, params: Params, caller: Caller) -> dict[str, Any]:
        session = self._find(params)
        reason = params.get_str("reason", "killed by an administrator")
        params.done()
        shown = session_json(session, self.daemon.rates, datetime.now(UTC))
        self.gateway.teardown(session, "killed", detail=reason, actor=caller.name)
        fields = ("enclave_ip", "app", "host", "mr_enclave")
        self._audit(
            caller,
            "kill",
            "session",
            shown["enclave_ip"],
            {"reason": reason, **{k: shown[k] for k in fields}},
        )
        return {"killed": shown["enclave_ip"], "app": shown["app"], "reason": reason}

    def denials(self, params: Params, caller: Caller) -> list[dict[str, Any]]:
        limit = params.get_int("limit", 50)
        params.done()
        if not 1 <= limit <= 1000:
            raise RpcError(INVALID_PARAMS, "limit must be 1..1000")
        return [denial_json(d) for d in list(self.gateway.denials)[-limit:]]

    def reload(self, params: Params, caller: Caller) -> dict[str, Any]:
        params.done()
        try:
            result = self.daemon.reload(actor=caller.name)
        except ReloadError as exc:
            raise RpcError(
                CONFLICT, f"reload refused, the running configuration stays: {exc}"
            ) from None
        self._audit(
            caller,
            "reload",
            "config",
            result["source"],
            {"closed_sessions": [s["enclave_ip"] for s in result["closed_sessions"]]},
        )
        return result

    def _audit(
        self, caller: Caller, action: str, kind: str, obj: str, after: dict[str, Any]
    ) -> None:
        assert self.daemon.engine is not None
        with session_factory(self.daemon.engine)() as db, db.begin():
            record(db, Actor(caller.uid, caller.name), action, kind, obj, after=after)

    # -- the store's methods ---------------------------------------------------------------

    def _store_handler(self, name: str) -> Any:
        store_method = STORE_METHODS[name]

        def handle(params: Params, caller: Caller) -> Any:
            daemon = self.daemon
            assert daemon.engine is not None
            if name == "subnets.remove":
                daemon.close_subnet_sessions_if_forced(params.raw())
                params = Params(params.raw())
            with session_factory(daemon.engine)() as db, db.begin():
                result = store_method.handler(db, Actor(caller.uid, caller.name), params)
            dry_run = isinstance(result, dict) and result.get("dry_run") is True
            if store_method.writes and not dry_run:
                closed = daemon.apply_store_change(name, caller.name)
                if isinstance(result, dict):
                    result = {**result, "closed_sessions": closed}
            return result

        return handle


def denial_json(denial: Any) -> dict[str, Any]:
    """One remembered denial."""
    return {
        "at": denial.at.isoformat(),
        "tunnel": denial.tunnel,
        "host": denial.host,
        "port": denial.port,
        "reason": denial.reason,
        "detail": denial.detail,
        "mr_enclave": denial.mr_enclave.hex() if denial.mr_enclave else None,
        "app": denial.app,
    }


def subnet_matches(text: str, network: IPv4Network, name: str) -> bool:
    """True when `text` names the subnet (by name or CIDR)."""
    if text == name:
        return True
    try:
        return IPv4Network(text) == network
    except ValueError:
        return False
