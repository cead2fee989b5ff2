"""Assemble and run one gateway process: config -> store -> TUN -> listeners -> loop.

`run(config)` returns when the daemon stops (SIGTERM/SIGINT) and undoes what it set up: every
session is closed with close_notify and its lease ended, the sockets are closed, the TUN
interface (or the addresses sengd added to an adopted one) removed. SIGHUP reloads the policy
knobs of the config file and the allowlist from the database and closes exactly the sessions the
new policy no longer admits; settings that need a restart are reported, not applied.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from sqlalchemy import Engine, select

from sengd import __version__, policy
from sengd import config as config_mod
from sengd.attestation import TrustConfig, TrustConfigError
from sengd.config import Config, ConfigError
from sengd.dataplane.gateway import Gateway, policy_defaults
from sengd.dataplane.loop import EventLoop
from sengd.dataplane.tun import TunInterface
from sengd.eventlog import emit
from sengd.sdnotify import Notifier
from sengd.servercert import load_credentials
from sengd.store.allocator import Allocator
from sengd.store.allowlist import load_allowlist
from sengd.store.db import open_database, session_factory
from sengd.store.models import EnclaveSubnet
from sengd.store.subnets import add_enclave_subnet, find_subnet
from sengd.tunnel.dtls import DtlsListener, ServerCredential

log = logging.getLogger("sengd")

DEMO_SUBNET = IPv4Network("192.168.28.0/24")
DEFAULT_SUBNET_NAME = "default"
SHUTDOWN_GRACE = 5.0


class StartupError(Exception):
    """The daemon cannot start as configured (message says what and where)."""


def trust_from_config(config: Config) -> TrustConfig:
    """The attestation trust anchors and time rules of `[attestation]`."""
    a = config.attestation
    return TrustConfig.load(
        a.ias_report_signing_ca,
        ias_chain_time="report" if a.ias_chain_time == "report" else "now",
        max_report_age=timedelta(seconds=a.max_report_age) if a.max_report_age > 0 else None,
        clock_skew=timedelta(seconds=a.clock_skew),
    )


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
            self.engine = open_database(cfg.database.url, auto_upgrade=cfg.database.auto_upgrade)
        except Exception as exc:
            raise StartupError(f"database {cfg.database.url}: {exc}") from exc
        allocator = Allocator(self.engine, cfg.gateway.id)
        for lease in allocator.start():
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
        try:
            self.gateway.bind()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {cfg.tunnel.address}:{cfg.tunnel.port}/"
                f"{cfg.tunnel.port + 1}: {exc.strerror or exc}"
            ) from exc
        self.loop.add_signal_handler(15, self.stop)  # SIGTERM
        self.loop.add_signal_handler(2, self.stop)  # SIGINT
        self.loop.add_signal_handler(1, self.reload)  # SIGHUP
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
            allowlist_entries=len(allowlist),
            mode="allow-any-attested" if demo_subnet is not None else "allowlist",
        )
        self.notifier.notify("READY=1", "STATUS=serving")

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
        if self.gateway is not None:
            self.gateway.shutdown()
            emit(log, logging.INFO, "final-stats", stats=json.dumps(self.gateway.status()))
        self.loop.stop()

    def reload(self) -> None:
        """SIGHUP: re-read the config's policy knobs and the allowlist; revoke what they deny."""
        gateway = self.gateway
        if gateway is None or self.engine is None:
            return
        self.notifier.notify("RELOADING=1")
        source = self.config.source
        try:
            new = config_mod.load(None if source == "<defaults>" else Path(source))
            trust = trust_from_config(new)
        except (ConfigError, TrustConfigError) as exc:
            emit(log, logging.ERROR, "reload-failed", reason=str(exc))
            self.notifier.notify("READY=1")
            return
        restart_needed = [
            name
            for name in ("tunnel", "interface", "database", "control", "limits", "gateway")
            if getattr(new, name) != getattr(self.config, name)
        ]
        if restart_needed:
            emit(log, logging.WARNING, "reload-partial", restart_needed=",".join(restart_needed))
        applied = dataclasses.replace(self.config, attestation=new.attestation)
        self.config = applied
        gateway.config = applied
        gateway.trust = trust
        gateway.defaults = policy_defaults(applied)
        revoked = gateway.apply_allowlist(load_policy(self.engine))
        if self.tun is not None and self.tun.manage:
            self.tun.sync_addresses(gateway_addresses(self.engine))
        emit(log, logging.INFO, "reloaded", revoked=len(revoked))
        self.notifier.notify("READY=1")

    def close(self) -> None:
        """Release the TUN, the database and the loop. Safe after a failed start."""
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
