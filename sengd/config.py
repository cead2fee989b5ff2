"""The appliance configuration: TOML -> frozen dataclasses.

Every section of the file is one dataclass below; every field is one key, with the type and
default given here (they are documented for operators in `etc/seng.toml`, which a test keeps in
step with this module). Loading is strict: an unknown section or key, a value of the wrong type
or an impossible value is a `ConfigError` naming the file, the key and the reason.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import UnionType
from typing import Any, NewType, Union, get_args, get_origin, get_type_hints

from sengd.store.db import DEFAULT_DATABASE_URL

MAX_TUNNEL_PORT = 32766  # the clients compute P+1 in a signed 16-bit type
KNOWN_QUOTE_STATUSES = frozenset(
    {
        "OK",
        "GROUP_OUT_OF_DATE",
        "CONFIGURATION_NEEDED",
        "SW_HARDENING_NEEDED",
        "CONFIGURATION_AND_SW_HARDENING_NEEDED",
    }
)
KNOWN_TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    }
)


_LOOPBACK = IPv4Address("127.0.0.1")  # what the SENG clients hardcode

WorkerCount = NewType("WorkerCount", int)
"""A number of worker processes; AUTO_WORKERS (-1) stands for "auto" in the file."""
AUTO_WORKERS = WorkerCount(-1)
MAX_WORKERS = 64


class ConfigError(Exception):
    """The configuration is unusable. The message reads `FILE: KEY: REASON`."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class GatewaySection:
    """[gateway]: identity of this gateway."""

    id: str = field(default_factory=socket.gethostname)
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class TunnelSection:
    """[tunnel]: the two DTLS listeners (A:P and A:P+1) and their timers."""

    address: IPv4Address = _LOOPBACK
    port: int = 12345
    mtu: int = 1432
    ecdsa_certificate: Path | None = None
    ecdsa_private_key: Path | None = None
    rsa_certificate: Path | None = None
    rsa_private_key: Path | None = None
    generate_if_missing: bool = True
    generated_dir: Path = Path("/var/lib/seng")
    handshake_timeout: float = 30.0
    handshake_workers: WorkerCount = AUTO_WORKERS
    handshake_engine: str = "openssl"
    assignment_resend: float = 3.0
    pairing_timeout: float = 30.0
    idle_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class LimitsSection:
    """[limits]: bounds that keep one misbehaving host from exhausting the gateway."""

    max_sessions: int = 10000
    max_pending_handshakes: int = 2048
    max_pending_handshakes_per_host: int = 256


@dataclass(frozen=True, slots=True)
class AttestationSection:
    """[attestation]: trust anchors and the global policy knobs."""

    ias_report_signing_ca: Path | None = None
    sgx_root_ca: Path | None = None
    allow_any_attested: bool = False
    ias_chain_time: str = "now"
    max_report_age: float = 0.0
    clock_skew: float = 300.0
    allow_debug: bool = False
    quote_statuses: tuple[str, ...] = ("OK", "GROUP_OUT_OF_DATE")
    tcb_statuses: tuple[str, ...] = ("UpToDate", "SWHardeningNeeded")
    denied_advisories: tuple[str, ...] = ()
    collateral_dir: Path | None = None
    pccs_url: str = ""
    pccs_cache_dir: Path = Path("/var/lib/seng/collateral")
    pccs_refresh: float = 3600.0
    pccs_timeout: float = 10.0
    pccs_verify_tls: bool = True
    pccs_ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class InterfaceSection:
    """[interface]: the TUN device the enclaves' packets enter and leave through."""

    name: str = "tunFA"
    manage: bool = True


@dataclass(frozen=True, slots=True)
class DatabaseSection:
    """[database]: where the allowlist, subnets, leases and audit trail live."""

    url: str = DEFAULT_DATABASE_URL
    auto_upgrade: bool = True


@dataclass(frozen=True, slots=True)
class ControlSection:
    """[control]: the Unix-socket RPC used by sengadm."""

    socket: Path = Path("/run/seng/sengd.sock")
    admin_group: str = "seng-admin"
    monitor_group: str = "seng-monitor"


@dataclass(frozen=True, slots=True)
class HostGroups:
    """`[firewall] host_groups`: group name -> the client host networks of that group."""

    groups: tuple[tuple[str, tuple[IPv4Network, ...]], ...] = ()

    def __iter__(self) -> Iterator[tuple[str, tuple[IPv4Network, ...]]]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)


@dataclass(frozen=True, slots=True)
class FirewallSection:
    """[firewall]: nftables sets of enclave addresses per app, category and host group."""

    enabled: bool = False
    table: str = "seng"
    family: str = "inet"
    rules_file: Path | None = None
    host_groups: HostGroups = field(default_factory=HostGroups)
    uplink: str = ""
    masquerade: bool = False
    forward_policy: str = "drop"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole appliance configuration. `source` is the file it came from (or "<defaults>")."""

    gateway: GatewaySection = field(default_factory=GatewaySection)
    tunnel: TunnelSection = field(default_factory=TunnelSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    attestation: AttestationSection = field(default_factory=AttestationSection)
    interface: InterfaceSection = field(default_factory=InterfaceSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    control: ControlSection = field(default_factory=ControlSection)
    firewall: FirewallSection = field(default_factory=FirewallSection)
    source: str = "<defaults>"


SECTIONS: dict[str, type[Any]] = {
    name: hint for name, hint in get_type_hints(Config).items() if name != "source"
}


def load(path: Path | str | None) -> Config:
    """Load and validate the config at `path`; `None` gives the embedded defaults."""
    if path is None:
        config = Config()
        validate(config)
        return config
    file = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(file, "-", "file not found") from None
    except PermissionError:
        raise ConfigError(file, "-", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(file, "-", "is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "-", f"not valid TOML: {exc}") from None
    return parse(raw, file)


def parse(raw: Mapping[str, Any], file: str = "<string>") -> Config:
    """Build a `Config` from a parsed TOML document, raising `ConfigError` on any problem."""
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(file, name, f"unknown section (known: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(file, name, "must be a table ([" + name + "])")
        sections[name] = _parse_section(SECTIONS[name], name, value, file)
    config = Config(**sections, source=file)
    validate(config)
    return config


def _parse_section(cls: type[Any], section: str, values: Mapping[str, Any], file: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        if key not in known:
            raise ConfigError(file, dotted, f"unknown key (known: {', '.join(sorted(known))})")
        kwargs[key] = _convert(hints[key], value, file, dotted)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, file: str, key: str) -> Any:
    """Convert one TOML value to the field type `hint`, or raise a ConfigError."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        inner = next(a for a in get_args(hint) if a is not type(None))
        # An empty string means "not set" for optional paths: TOML has no null.
        if value == "":
            return None
        return _convert(inner, value, file, key)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(file, key, f"must be a list of strings, not {value!r}")
        return tuple(value)
    converter = _CONVERTERS.get(hint)
    if converter is None:  # pragma: no cover - a programming error in the schema above
        raise TypeError(f"no converter for {hint!r}")
    return converter(value, file, key)


def _expect(kind: type[Any] | tuple[type[Any], ...], label: str) -> Callable[[Any, str, str], Any]:
    def check(value: Any, file: str, key: str) -> Any:
        # bool is a subclass of int: `port = true` must not pass as 1.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ConfigError(file, key, f"must be {label}, not a boolean")
        if not isinstance(value, kind):
            raise ConfigError(file, key, f"must be {label}, not {type(value).__name__} {value!r}")
        return value

    return check


def _to_float(value: Any, file: str, key: str) -> float:
    return float(_expect((int, float), "a number of seconds")(value, file, key))


def _to_path(value: Any, file: str, key: str) -> Path:
    text = _expect(str, "a file path")(value, file, key)
    if not text:
        raise ConfigError(file, key, "must not be empty")
    return Path(text)


def _to_ipv4(value: Any, file: str, key: str) -> IPv4Address:
    text = _expect(str, "an IPv4 address")(value, file, key)
    try:
        return IPv4Address(text)
    except ValueError:
        raise ConfigError(file, key, f"{text!r} is not an IPv4 address") from None


def _to_workers(value: Any, file: str, key: str) -> WorkerCount:
    if value == "auto":
        return AUTO_WORKERS
    count = _expect(int, f'"auto" or a number 0..{MAX_WORKERS}')(value, file, key)
    if not 0 <= count <= MAX_WORKERS:
        raise ConfigError(file, key, f'must be "auto" or 0..{MAX_WORKERS}, not {count}')
    return WorkerCount(count)


def _to_host_groups(value: Any, file: str, key: str) -> HostGroups:
    table = _expect(dict, "a table of group = [CIDR, ...]")(value, file, key)
    groups = []
    for name, cidrs in table.items():
        where = f"{key}.{name}"
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            raise ConfigError(file, where, f"must be a list of IPv4 networks, not {cidrs!r}")
        networks = []
        for text in cidrs:
            try:
                networks.append(IPv4Network(text))
            except ValueError as exc:
                raise ConfigError(file, where, f"{text!r} is not an IPv4 network: {exc}") from None
        groups.append((str(name), tuple(networks)))
    return HostGroups(tuple(groups))


_CONVERTERS: dict[Any, Callable[[Any, str, str], Any]] = {
    str: _expect(str, "a string"),
    int: _expect(int, "an integer"),
    bool: _expect(bool, "true or false"),
    float: _to_float,
    Path: _to_path,
    IPv4Address: _to_ipv4,
    HostGroups: _to_host_groups,
    WorkerCount: _to_workers,
}


def validate(config: Config) -> None:
    """Check the values that are well-typed but impossible; raise `ConfigError` on the first."""
    f = config.source
    t = config.tunnel
    if t.address.is_unspecified:
        raise ConfigError(
            f, "tunnel.address", "must be a specific address: replies must leave from A:P"
        )
    if not 1 <= t.port <= MAX_TUNNEL_PORT:
        raise ConfigError(
            f, "tunnel.port", f"must be 1..{MAX_TUNNEL_PORT} (clients compute P+1 in 16 bits)"
        )
    if not 576 <= t.mtu <= 1432:
        raise ConfigError(f, "tunnel.mtu", "must be 576..1432 (SENG clients accept <= 1432)")
    for kind in ("ecdsa", "rsa"):
        cert = getattr(t, f"{kind}_certificate")
        key = getattr(t, f"{kind}_private_key")
        if (cert is None) != (key is None):
            missing = f"{kind}_private_key" if key is None else f"{kind}_certificate"
            raise ConfigError(f, f"tunnel.{missing}", f"must be set together with its {kind} pair")
    if t.ecdsa_certificate is None and t.rsa_certificate is None and not t.generate_if_missing:
        raise ConfigError(
            f,
            "tunnel.ecdsa_certificate",
            "no server certificate configured and generate_if_missing is false",
        )
    for name in ("handshake_timeout", "assignment_resend", "pairing_timeout"):
        if not 0 < getattr(t, name) <= 3600:
            raise ConfigError(f, f"tunnel.{name}", "must be > 0 and <= 3600 seconds")
    if t.handshake_engine not in ("openssl", "mbedtls"):
        raise ConfigError(f, "tunnel.handshake_engine", 'must be "openssl" or "mbedtls"')
    if not 0 <= t.idle_timeout <= 7 * 86400:
        raise ConfigError(f, "tunnel.idle_timeout", "must be 0 (off) .. 604800 seconds")
    _validate_limits(config)
    _validate_attestation(config)
    _validate_names(config)
    _validate_firewall(config)


def _validate_limits(config: Config) -> None:
    f, lim = config.source, config.limits
    for name in ("max_sessions", "max_pending_handshakes", "max_pending_handshakes_per_host"):
        if not 1 <= getattr(lim, name) <= 1_000_000:
            raise ConfigError(f, f"limits.{name}", "must be 1..1000000")
    if lim.max_pending_handshakes_per_host > lim.max_pending_handshakes:
        raise ConfigError(
            f, "limits.max_pending_handshakes_per_host", "must not exceed max_pending_handshakes"
        )


def _validate_attestation(config: Config) -> None:
    f, a = config.source, config.attestation
    if a.ias_chain_time not in ("now", "report"):
        raise ConfigError(f, "attestation.ias_chain_time", 'must be "now" or "report"')
    if a.max_report_age < 0:
        raise ConfigError(f, "attestation.max_report_age", "must be >= 0 (0 = no limit)")
    if not 0 <= a.clock_skew <= 86400:
        raise ConfigError(f, "attestation.clock_skew", "must be 0..86400 seconds")
    for status in a.quote_statuses:
        if status not in KNOWN_QUOTE_STATUSES:
            raise ConfigError(
                f,
                "attestation.quote_statuses",
                f"{status!r} can never be accepted (acceptable: "
                f"{', '.join(sorted(KNOWN_QUOTE_STATUSES))})",
            )
    for status in a.tcb_statuses:
        if status not in KNOWN_TCB_STATUSES:
            raise ConfigError(
                f,
                "attestation.tcb_statuses",
                f"{status!r} is not an acceptable TCB status "
                f"({', '.join(sorted(KNOWN_TCB_STATUSES))})",
            )
    _validate_pccs(config)


def _validate_pccs(config: Config) -> None:
    f, a = config.source, config.attestation
    if a.pccs_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", a.pccs_url):
        raise ConfigError(
            f, "attestation.pccs_url", "must be an https:// (or http://) URL without query"
        )
    if not a.pccs_cache_dir.is_absolute():
        raise ConfigError(f, "attestation.pccs_cache_dir", "must be an absolute path")
    if not 60 <= a.pccs_refresh <= 7 * 86400:
        raise ConfigError(f, "attestation.pccs_refresh", "must be 60..604800 seconds")
    if not 1 <= a.pccs_timeout <= 300:
        raise ConfigError(f, "attestation.pccs_timeout", "must be 1..300 seconds")


def _validate_names(config: Config) -> None:
    f = config.source
    name = config.interface.name
    if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
        raise ConfigError(f, "interface.name", f"{name!r} is not a valid interface name")
    gw = config.gateway.id
    if not gw or len(gw) > 64 or not all(c.isalnum() or c in "-_." for c in gw):
        raise ConfigError(f, "gateway.id", "must be 1-64 letters, digits, '-', '_' or '.'")
    if config.gateway.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f, "gateway.log_level", "must be debug, info, warning or error")
    url = config.database.url
    if not url.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
        raise ConfigError(f, "database.url", "must be a sqlite:// or postgresql:// URL")
    if not config.control.socket.is_absolute():
        raise ConfigError(f, "control.socket", "must be an absolute path")


_NFT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _validate_firewall(config: Config) -> None:
    f, fw = config.source, config.firewall
    if not _NFT_NAME.fullmatch(fw.table):
        raise ConfigError(f, "firewall.table", "must be 1-64 of a-z, 0-9, '_', starting a-z")
    if fw.family not in ("inet", "ip"):
        raise ConfigError(f, "firewall.family", 'must be "inet" or "ip"')
    if fw.rules_file is not None:
        text = str(fw.rules_file)
        if not fw.rules_file.is_absolute():
            raise ConfigError(f, "firewall.rules_file", "must be an absolute path")
        if any(c in text for c in '"\n\r\\'):
            raise ConfigError(f, "firewall.rules_file", "must not contain quotes or newlines")
    _validate_host_groups(config)
    up = fw.uplink
    if up and (len(up) > 15 or "/" in up or any(c.isspace() or c == '"' for c in up)):
        raise ConfigError(f, "firewall.uplink", f"{up!r} is not a valid interface name")
    if up and up == config.interface.name:
        raise ConfigError(f, "firewall.uplink", "must not be the enclave TUN interface")
    if fw.masquerade and not fw.uplink:
        raise ConfigError(f, "firewall.masquerade", "needs firewall.uplink")
    if fw.forward_policy not in ("accept", "drop"):
        raise ConfigError(f, "firewall.forward_policy", 'must be "accept" or "drop"')


def _validate_host_groups(config: Config) -> None:
    f, fw = config.source, config.firewall
    seen: dict[str, str] = {}
    for name, networks in fw.host_groups:
        key = f"firewall.host_groups.{name}"
        if not _GROUP_NAME.fullmatch(name):
            raise ConfigError(f, key, "group names are 1-64 letters, digits, '_' or '-'")
        folded = name.lower().replace("-", "_")
        if folded in seen:
            raise ConfigError(f, key, f"gives the same set name as group {seen[folded]!r}")
        seen[folded] = name
        if not networks:
            raise ConfigError(f, key, "needs at least one network")
