"""Assemble and run one gateway process: config -> store -> TUN -> listeners -> loop.

`run(config)` returns when the daemon stops (SIGTERM/SIGINT) and undoes what it set up: every
session is closed with close_notify and its lease ended, the sockets are closed, the TUN
interface (or the addresses sengd added to an adopted one) removed. SIGHUP reloads the policy
knobs of the config file and the allowlist from the database and closes exactly the sessions the
new policy no longer admits; settings that need a restart are reported, not applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from sengd import __version__, policy
from sengd import config as config_mod
from sengd.attestation import TrustConfig, TrustConfigError
from sengd.config import Config, ConfigError
from sengd.dataplane.gateway import Gateway, policy_defaults
from sengd.dataplane.handshakes import HandshakePool, HandshakePoolError, auto_workers
from sengd.dataplane.loop import EventLoop
from sengd.dataplane.tun import TunInterface
from sengd.eventlog import emit
from sengd.net import Firewall, FirewallError, LiveState, member_of
from sengd.rpc.server import RpcServer
from sengd.sdnotify import Notifier
from sengd.servercert import load_credentials
from sengd.store.allocator import Allocator
from sengd.store.allowlist import load_allowlist
from sengd.store.db import (
    create_store_engine,
    display_url,
    open_database,
    schema_status,
    session_factory,
)
from sengd.store.models import Category, EnclaveSubnet
from sengd.store.subnets import add_enclave_subnet, find_subnet
from sengd.tunnel.dtls import DtlsListener, ServerCredential, handoff_supported
from sengd.tunnel.session import State

log = logging.getLogger("sengd")

DEMO_SUBNET = IPv4Network("192.168.28.0/24")
DEFAULT_SUBNET_NAME = "default"
SHUTDOWN_GRACE = 5.0


STATS_INTERVAL = 1.0


class ReloadError(Exception):
    """The configuration could not be reloaded; the running one stays in force."""


class _EventPublisher:
    """Turns session changes into RPC events for subscribers."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def session_up(self, session: Any) -> None:
        self._publish("session.up", session, None)

    def session_down(self, session: Any, reason: str) -> None:
        self._publish("session.down", session, reason)

    def _publish(self, event: str, session: Any, reason: str | None) -> None:
        from sengd.rpc.methods import session_json

        if self.daemon.rpc is not None:
            body = session_json(session, self.daemon.rates, datetime.now(UTC))
            if reason is not None:
                body["reason"] = reason
            self.daemon.rpc.publish(event, body)


class StartupError(Exception):
    """The daemon cannot start as configured (message says what and where)."""


def trust_from_config(config: Config, *, fetch: bool = True) -> TrustConfig:
    """The attestation trust anchors, time rules and DCAP collateral of `[attestation]`.

    DCAP collateral is loaded from `collateral_dir` and the PCCS cache directory now (files
    only); with a `pccs_url` and `fetch`, a background thread keeps it fresh and fetches what
    verification finds missing. That thread only writes into the store it was given and ends
    by itself once the returned trust config is dropped (e.g. replaced by a reload).
    """
    from sengd.attestation import CollateralStore, load_sgx_roots
    from sengd.attestation.pccs import CollateralFetcher, PccsSettings

    a = config.attestation
    roots = load_sgx_roots(a.sgx_root_ca)
    store = None
    if a.collateral_dir is not None or a.pccs_url:
        store = CollateralStore(roots)
        sources = [a.collateral_dir] if a.collateral_dir is not None else []
        if a.pccs_url and a.pccs_cache_dir.is_dir():
            sources.append(a.pccs_cache_dir)
        for source in sources:
            try:
                problems = store.load_tree(source)
            except OSError as exc:
                problems = [f"{source}: {exc.strerror or exc}"]
            for problem in problems:
                emit(log, logging.WARNING, "collateral-skipped", problem=problem)
    trust = TrustConfig.load(
        a.ias_report_signing_ca,
        ias_chain_time="report" if a.ias_chain_time == "report" else "now",
        max_report_age=timedelta(seconds=a.max_report_age) if a.max_report_age > 0 else None,
        clock_skew=timedelta(seconds=a.clock_skew),
        sgx_roots=roots,
        collateral=store,
    )
    if store is not None and a.pccs_url and fetch:
        settings = PccsSettings(
            url=a.pccs_url,
            cache_dir=a.pccs_cache_dir,
            refresh=a.pccs_refresh,
            timeout=a.pccs_timeout,
            verify_tls=a.pccs_verify_tls,
            ca_file=a.pccs_ca_file,
        )
        CollateralFetcher(store, settings).start()
    return trust


def load_policy(engine: Engine) -> policy.Allowlist:
    """The allowlist as it is in the database now."""
    with session_factory(engine)() as session:
        return policy.Allowlist(load_allowlist(session))


def gateway_addresses(engine: Engine) -> tuple[IPv4Interface, ...]:
    """The gateway address of every enclave subnet, as interface addresses for the TUN."""
    with session_factory(engine)() as session:
        rows = session.scalars(select(EnclaveSubnet).order_by(EnclaveSubnet.id)).all()
        return tuple(IPv4Interface(f"{row.gateway_address}/{row.cidr.prefixlen}") for row in rows)


def ensure_demo_subnet(engine: Engine) -> int:
    """The id of 192.168.28.0/24 (gateway .1), created if missing: `allow_any_attested` mode."""
    with session_factory(engine)() as session, session.begin():
        row = find_subnet(session, DEMO_SUBNET)
        if row is None:
            row = add_enclave_subnet(
                session,
                DEMO_SUBNET,
                name=DEFAULT_SUBNET_NAME,
                description="the original SENG servers' default subnet",
            )
        return int(row.id)


class Daemon:
    """One running sengd: owns the loop, the gateway, the TUN and the database engine."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = EventLoop()
        self.notifier = Notifier()
        self.engine: Engine | None = None
        self.tun: TunInterface | None = None
        self.gateway: Gateway | None = None
        self.rpc: RpcServer | None = None
        self.firewall: Firewall | None = None
        self.handshakes: HandshakePool | None = None
        self.rates: dict[int, tuple[float, float]] = {}
        self._last_counts: dict[int, tuple[int, int]] = {}

    def start(self) -> None:
        """Set everything up; raise StartupError (after undoing partial work) on failure."""
        try:
            self._start()
        except Exception:
            self.close()
            raise

    def _start(self) -> None:
        cfg = self.config
        now = datetime.now(UTC)
        try:
            creds = [
                ServerCredential.from_bytes(c.certificate_pem, c.private_key_pem)
                for c in load_credentials(cfg.tunnel, now)
            ]
            trust = trust_from_config(cfg)
        except Exception as exc:
            raise StartupError(str(exc)) from exc
        try:
            before = schema_status(probe := create_store_engine(cfg.database.url))
            probe.dispose()
            self.engine = open_database(cfg.database.url, auto_upgrade=cfg.database.auto_upgrade)
        except Exception as exc:
            raise StartupError(f"database {display_url(cfg.database.url)}: {exc}") from exc
        emit(
            log,
            logging.INFO,
            "database",
            url=display_url(cfg.database.url),
            revision=schema_status(self.engine).current,
            upgraded_from=before.current if before.current != before.head else None,
        )
        allocator = Allocator(self.engine, cfg.gateway.id)
        reclaimed = allocator.start()
        for lease in reclaimed:
            emit(log, logging.WARNING, "lease-reclaimed", enclave_ip=lease.address)
        demo_subnet = (
            ensure_demo_subnet(self.engine) if cfg.attestation.allow_any_attested else None
        )
        allowlist = load_policy(self.engine)
        tun_fd = self._open_tun()
        listeners = tuple(
            DtlsListener(
                creds,
                handshake_timeout=cfg.tunnel.handshake_timeout,
                max_pending=cfg.limits.max_pending_handshakes,
                max_pending_per_host=cfg.limits.max_pending_handshakes_per_host,
                max_connections=cfg.limits.max_sessions + cfg.limits.max_pending_handshakes,
            )
            for _ in range(2)
        )
        self.gateway = Gateway(
            cfg,
            self.loop,
            (listeners[0], listeners[1]),
            tun_fd,
            trust,
            allocator,
            allowlist,
            demo_subnet,
        )
        if cfg.firewall.enabled:  # [firewall]: before any enclave can connect
            self._start_firewall([lease.address for lease in reclaimed])
        try:
            self.gateway.bind()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {cfg.tunnel.address}:{cfg.tunnel.port}/"
                f"{cfg.tunnel.port + 1}: {exc.strerror or exc}"
            ) from exc
        self._start_handshake_workers(creds)
        self._open_control_socket()
        self.loop.call_later(STATS_INTERVAL, self._stats_tick)
        self.loop.add_signal_handler(15, self.stop)  # SIGTERM
        self.loop.add_signal_handler(2, self.stop)  # SIGINT
        self.loop.add_signal_handler(1, self._reload_signal)  # SIGHUP
        interval = self.notifier.watchdog_interval()
        if interval:
            self._watchdog(interval)
        emit(
            log,
            logging.INFO,
            "started",
            version=__version__,
            gateway=cfg.gateway.id,
            listen=f"{cfg.tunnel.address}:{cfg.tunnel.port}+{cfg.tunnel.port + 1}",
            interface=cfg.interface.name,
            key_types=",".join(k.value for k in listeners[0].key_types),
            handshake_workers=len(self.handshakes.workers) if self.handshakes else 0,
            allowlist_entries=len(allowlist),
            mode="allow-any-attested" if demo_subnet is not None else "allowlist",
        )
        self.notifier.notify("READY=1", "STATUS=serving")

    def _start_handshake_workers(self, creds: list[ServerCredential]) -> None:
        """Run handshakes in worker processes unless configured off (or impossible here)."""
        gateway = self.gateway
        assert gateway is not None
        wanted = self.config.tunnel.handshake_workers
        count = auto_workers() if wanted < 0 else int(wanted)
        if count == 0:
            return
        if not handoff_supported():
            emit(
                log,
                logging.WARNING,
                "handshake-workers-unavailable",
                reason="this Mbed TLS cannot export keys at the end of a handshake",
                handshakes="inline",
            )
            return
        self.handshakes = HandshakePool(
            self.loop,
            gateway.listeners,
            gateway.sockets,
            creds,
            count,
            gateway.after_listener,
            log_level=self.config.gateway.log_level,
            engine=self.config.tunnel.handshake_engine,
        )
        try:
            self.handshakes.start()
        except HandshakePoolError as exc:
            self.handshakes = None
            raise StartupError(str(exc)) from exc
        gateway.sync_handshakes = self.handshakes.drain

    def _open_control_socket(self) -> None:
        from sengd.rpc.methods import LiveMethods

        assert self.gateway is not None
        cfg = self.config.control
        self.rpc = RpcServer(
            self.loop,
            cfg.socket,
            LiveMethods(self).table(),
            admin_group=cfg.admin_group,
            monitor_group=cfg.monitor_group,
        )
        try:
            self.rpc.open()
        except OSError as exc:
            raise StartupError(f"control socket {cfg.socket}: {exc.strerror or exc}") from exc
        self.gateway.observers.append(_EventPublisher(self))
        self.gateway.denial_listeners.append(self._publish_denial)

    def _publish_denial(self, denial: Any) -> None:
        from sengd.rpc.methods import denial_json

        if self.rpc is not None:
            self.rpc.publish("denial", denial_json(denial))

    def _stats_tick(self) -> None:
        """Every second: per-session rates for the RPC, and a `stats` event to subscribers."""
        gateway = self.gateway
        if gateway is None or not self.loop.running:
            return
        rates: dict[int, tuple[float, float]] = {}
        counts: dict[int, tuple[int, int]] = {}
        for session in gateway.sessions():
            c = session.counters
            counts[session.id] = (c.rx_bytes, c.tx_bytes)
            last = self._last_counts.get(session.id)
            if last is not None:
                rates[session.id] = (
                    (c.rx_bytes - last[0]) / STATS_INTERVAL,
                    (c.tx_bytes - last[1]) / STATS_INTERVAL,
                )
        self.rates, self._last_counts = rates, counts
        if self.rpc is not None:
            status = gateway.status()
            self.rpc.publish(
                "stats",
                {
                    "sessions": status["sessions"],
                    "active_sessions": status["active"],
                    "rx_bytes_per_s": round(sum(r[0] for r in rates.values()), 1),
                    "tx_bytes_per_s": round(sum(r[1] for r in rates.values()), 1),
                    "handshakes": status["handshakes"],
                    **gateway.traffic_totals(),
                },
            )
        self.loop.call_later(STATS_INTERVAL, self._stats_tick)

    def apply_store_change(self, method: str, actor: str) -> list[dict[str, Any]]:
        """After an allowlist or subnet change: reload the policy, the address pools and the
        TUN addresses; close the sessions the new policy no longer admits and return them."""
        from sengd.rpc.methods import session_json

        gateway, engine = self.gateway, self.engine
        assert gateway is not None and engine is not None
        now = datetime.now(UTC)
        allowlist = load_policy(engine)
        shown = {s.id: session_json(s, self.rates, now) for s in gateway.sessions()}
        revoked = gateway.apply_allowlist(allowlist)
        gateway.allocator.refresh()
        if self.tun is not None and self.tun.manage:
            self.tun.sync_addresses(gateway_addresses(engine))
        self._sync_firewall()
        closed = [shown[s.id] for s in revoked if s.id in shown]
        emit(log, logging.INFO, "admin-change", method=method, actor=actor, closed=len(closed))
        if self.rpc is not None:
            self.rpc.publish(
                "admin.change",
                {
                    "method": method,
                    "actor": actor,
                    "closed_sessions": [c["enclave_ip"] for c in closed],
                },
            )
        return closed

    def close_subnet_sessions_if_forced(self, params: dict[str, Any]) -> None:
        """`subnets.remove` with force: close the subnet's sessions before it goes away."""
        from sengd.rpc.methods import subnet_matches

        if params.get("force") is not True or self.gateway is None or self.engine is None:
            return
        target = params.get("name_or_cidr")
        if not isinstance(target, str):
            return
        with session_factory(self.engine)() as db:
            ids = {
                row.id
                for row in db.scalars(select(EnclaveSubnet))
                if subnet_matches(target, row.cidr, row.name)
            }
        for session in self.gateway.sessions():
            if session.subnet_id in ids:
                self.gateway.teardown(session, "subnet-removed")

    def _start_firewall(self, reclaimed: list[IPv4Address]) -> None:
        gateway = self.gateway
        assert gateway is not None
        self.firewall = Firewall(self.config.firewall, self.config.interface.name)
        try:
            self.firewall.open()
            self.firewall.start(self._firewall_state(), reclaimed)
        except FirewallError as exc:
            self.firewall = None
            raise StartupError(f"[firewall] enabled: {exc}") from exc
        # Deny by default: a session whose addresses are not in its sets does not stay up.
        self.firewall.on_error = lambda session: self.loop.call_later(
            0, lambda: gateway.teardown(session, "firewall-error")
        )
        gateway.observers.append(self.firewall)

    def _firewall_state(self) -> LiveState:
        """What the firewall sets must reflect now (allowlist, categories, active sessions)."""
        assert self.gateway is not None and self.engine is not None
        with session_factory(self.engine)() as db:
            categories = tuple(db.scalars(select(Category.name)))
        return LiveState(
            apps=tuple(entry.name for entry in self.gateway.allowlist),
            categories=categories,
            members=tuple(member_of(s) for s in self.gateway.sessions() if s.state is State.ACTIVE),
            subnets=tuple(i.network for i in gateway_addresses(self.engine)),
        )

    def _sync_firewall(self) -> None:
        """Converge the firewall on the current allowlist, sessions and [firewall] settings."""
        if self.firewall is None:
            return
        try:
            self.firewall.sync(self._firewall_state(), self.config.firewall)
        except FirewallError as exc:
            emit(log, logging.ERROR, "firewall-sync-failed", reason=str(exc))

    def _open_tun(self) -> int:
        assert self.engine is not None
        cfg = self.config
        self.tun = TunInterface(
            cfg.interface.name,
            cfg.tunnel.mtu,
            gateway_addresses(self.engine),
            manage=cfg.interface.manage,
        )
        try:
            self.tun.open()
        except Exception as exc:
            raise StartupError(str(exc)) from exc
        return self.tun.fileno()

    def _watchdog(self, interval: float) -> None:
        self.notifier.notify("WATCHDOG=1")
        self.loop.call_later(interval, lambda: self._watchdog(interval))

    def run(self) -> None:
        """Serve until stopped."""
        self.loop.run()

    def stop(self) -> None:
        """Drain: close every session and the listeners, then leave the loop."""
        self.notifier.notify("STOPPING=1")
        emit(log, logging.INFO, "stopping")
        if self.handshakes is not None:
            self.handshakes.stop()
            self.handshakes = None
        if self.gateway is not None:
            self.gateway.shutdown()
            emit(log, logging.INFO, "final-stats", stats=json.dumps(self.gateway.status()))
        self.loop.stop()

    def _reload_signal(self) -> None:
        with contextlib.suppress(ReloadError):
            self.reload(actor="SIGHUP")

    def reload(self, actor: str = "-") -> dict[str, Any]:
        """Re-read the config's policy knobs and the allowlist; close what they no longer admit.

        Returns what happened; raises ReloadError (keeping the running configuration) when the
        file is invalid."""
        gateway = self.gateway
        if gateway is None or self.engine is None:
            raise ReloadError("the gateway is not running")
        self.notifier.notify("RELOADING=1")
        source = self.config.source
        try:
            new = config_mod.load(None if source == "<defaults>" else Path(source))
            trust = trust_from_config(new)
        except (ConfigError, TrustConfigError) as exc:
            emit(log, logging.ERROR, "reload-failed", reason=str(exc), actor=actor)
            self.notifier.notify("READY=1")
            raise ReloadError(str(exc)) from exc
        restart_needed = [
            name
            for name in ("tunnel", "interface", "database", "control", "limits", "gateway")
            if getattr(new, name) != getattr(self.config, name)
        ]
        if restart_needed:
            emit(log, logging.WARNING, "reload-partial", restart_needed=",".join(restart_needed))
        firewall = new.firewall
        if any(
            getattr(new.firewall, k) != getattr(self.config.firewall, k)
            for k in ("enabled", "table", "family")
        ):
            emit(log, logging.WARNING, "reload-partial", restart_needed="firewall")
            firewall = self.config.firewall
        applied = dataclasses.replace(self.config, attestation=new.attestation, firewall=firewall)
        self.config = applied
        gateway.config = applied
        gateway.trust = trust
        gateway.defaults = policy_defaults(applied)
        closed = self.apply_store_change("config.reload", actor)
        emit(log, logging.INFO, "reloaded", revoked=len(closed), actor=actor)
        self.notifier.notify("READY=1")
        return {
            "source": source,
            "restart_needed": restart_needed,
            "closed_sessions": closed,
        }

    def close(self) -> None:
        """Release the control socket, the TUN, the database and the loop. Safe after a failed
        start."""
        if self.handshakes is not None:
            self.handshakes.stop()
            self.handshakes = None
        if self.firewall is not None:  # after the sessions' teardown: their sets are empty
            self.firewall.close()
            self.firewall = None
        if self.rpc is not None:
            self.rpc.close()
            self.rpc = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
        self.loop.close()
        self.notifier.close()


def run(config: Config) -> None:
    """Start, serve until SIGTERM/SIGINT, clean up. Raises StartupError if it cannot start."""
    daemon = Daemon(config)
    daemon.start()
    try:
        daemon.run()
    finally:
        daemon.close()
    emit(log, logging.INFO, "stopped")
