"""Configuration: one TOML file loaded into frozen, typed dataclasses.

Every error names the file, the key path (``trunk[1].peer``) and the reason, so an operator can fix
a config without reading code. Unknown keys are errors: a typo must never silently fall back to a
default on a security gateway.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Side = Literal["legacy", "secure"]
Transport = Literal["udp", "tcp", "tls"]
MediaPolicy = Literal["rtp", "srtp", "srtp-optional", "dtls-srtp"]
ClientAuth = Literal["require", "optional", "off"]

SRTP_SUITES = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
    "AES_256_CM_HMAC_SHA1_80",
)
DEFAULT_SUITES = ("AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80")
# Suites with a DTLS-SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
DTLS_SRTP_SUITES = ("AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80",
                    "AES_CM_128_HMAC_SHA1_32")
DEFAULT_METHODS = (
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "PRACK", "INFO", "REFER", "NOTIFY",
)
DEFAULT_PASS_HEADERS = ("Content-Disposition", "Accept", "Session-Expires",
                        "Min-SE")


class ConfigError(Exception):
    """A config problem: which file, which key, and why."""

    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}")
        self.file = file
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def addr(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class GatewaySection:
    name: str = "srtpgw"
    domain: str = "gateway.srtpgw.test"
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class LoggingSection:
    level: str = "info"
    format: Literal["kv", "json"] = "kv"
    file: Path | None = None
    security_file: Path | None = None  # security events as JSON lines for a SIEM
    sip_message_text: bool = False  # debug sip.message events carry the whole (redacted) text


@dataclass(frozen=True, slots=True)
class TlsSection:
    certificate: Path = Path("keys/gateway.crt")
    private_key: Path = Path("keys/gateway.key")
    ca_file: Path = Path("keys/ca.crt")
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    handshake_timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class DtlsSection:
    certificate: Path = Path("keys/dtls.crt")
    private_key: Path = Path("keys/dtls.key")
    handshake_timeout: float = 10.0
    accept_sha1_fingerprint: bool = True


@dataclass(frozen=True, slots=True)
class MediaSection:
    address: str = "127.0.0.1"
    advertise_address: str | None = None
    port_min: int = 30000
    port_max: int = 39999
    inactivity_timeout: float = 60.0
    nat_relatch_after: float = 1.5  # nat_learning: latched source silent this long before a move
    engine: str = "native"  # "native" (C loop, falls back when not built) or "python" (reference)

    @property
    def sdp_address(self) -> str:
        return self.advertise_address or self.address


@dataclass(frozen=True, slots=True)
class SipSection:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_message_size: int = 65535
    max_headers: int = 128
    max_header_line: int = 8192
    max_uri_length: int = 1024
    tcp_idle_timeout: float = 300.0
    max_connection_buffer: int = 131072
    keepalive_interval: float = 30.0
    session_expires: int = 1800
    header_timeout: float = 10.0  # a message on a stream must complete within this (slow loris)
    max_connections_per_source: int = 64  # inbound TCP/TLS connections from one IP at once
    first_message_timeout: float = 10.0  # a new inbound connection's first whole message; 0 = off
    dns_servers: tuple[HostPort, ...] = ()  # RFC 3263 lookups; () = /etc/resolv.conf


@dataclass(frozen=True, slots=True)
class RegistrarSection:
    """Bounds on the bindings of phones and PBXs that register with us (``trunk.registrar``)."""

    max_bindings: int = 10000
    max_bindings_per_aor: int = 5
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 600
    flow_timer: int = 120  # RFC 5626 §4.4.1: keep-alive at least this often on an outbound flow


@dataclass(frozen=True, slots=True)
class AdminSection:
    enabled: bool = True
    listen: HostPort = HostPort("127.0.0.1", 9060)
    cert_warning_days: int = 14
    drain_timeout: float = 30.0
    token_file: Path | None = None  # bearer token (file mode 0600) for POSTs and remote GETs
    allowed_hosts: tuple[str, ...] = ()  # Host header values besides the bound address

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.listen.host)


@dataclass(frozen=True, slots=True)
class CdrSection:
    path: Path | None = None
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True, slots=True)
class PikeSection:
    """Ban a source that sends more than ``max_requests`` within ``window`` seconds."""

    enabled: bool = True
    window: float = 2.0
    max_requests: int = 200
    ban_time: float = 300.0


@dataclass(frozen=True, slots=True)
class FirewallSection:
    unknown_source: Literal["drop", "403"] = "drop"
    log_interval: float = 60.0
    pike: PikeSection = PikeSection()
    user_agent_deny: tuple[str, ...] = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan",
                                        "VaxSIPUserAgent", "pplsip", "sundayddr")
    srtp_auth_failure_threshold: int = 50


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    transport: Transport
    address: str
    port: int
    tls_client_auth: ClientAuth = "optional"

    @property
    def hostport(self) -> HostPort:
        return HostPort(self.address, self.port)


@dataclass(frozen=True, slots=True)
class Route:
    """Requests whose R-URI user starts with ``prefix`` (and/or has ``domain``) go to ``to``."""

    to: str
    prefix: str | None = None
    domain: str | None = None
    strip: int = 0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Token buckets: ``rate`` per second refilled, ``burst`` tokens at most."""

    new_dialogs_per_source: float = 20.0
    new_dialogs_burst: int = 40
    out_of_dialog_per_source: float = 20.0
    out_of_dialog_burst: int = 40
    new_dialogs_per_trunk: float = 500.0
    new_dialogs_trunk_burst: int = 1000


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    side: Side
    transport: Transport
    peer: HostPort
    listener: str
    media: MediaPolicy
    route_to: str | None = None
    routes: tuple[Route, ...] = ()
    allowed_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls_identity: tuple[str, ...] = ()
    tls_fingerprints: tuple[str, ...] = ()
    tls_server_name: str | None = None
    suites: tuple[str, ...] = DEFAULT_SUITES
    allow_sdes_over_insecure: bool = False
    accept_unencrypted_srtcp: bool = False
    rtcp_mux: bool = True
    nat_learning: bool = False
    answer_options: bool = True
    trusted: bool = False
    max_calls: int = 1000
    media_timeout: float | None = None
    end_call_on_media_timeout: bool = True
    methods: tuple[str, ...] = DEFAULT_METHODS
    pass_headers: tuple[str, ...] = DEFAULT_PASS_HEADERS
    deny_headers: tuple[str, ...] = ()
    rate_limit: RateLimit = RateLimit()
    pike: PikeSection | None = None  # this trunk's own flood limits (None: [firewall.pike])
    no_route_status: int = 404
    peer_srv: bool = False  # peer is a host name without a port: located by DNS SRV (RFC 3263)
    registrar: bool = False  # its phones/PBXs REGISTER with us; calls to it go to their bindings
    refusal_warnings: bool = False  # 488s to it carry Warning: 399/301 <gateway name> "<why>"

    @property
    def secure(self) -> bool:
        return self.side == "secure"


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    gateway: GatewaySection = GatewaySection()
    logging: LoggingSection = LoggingSection()
    tls: TlsSection = TlsSection()
    dtls: DtlsSection = DtlsSection()
    media: MediaSection = MediaSection()
    sip: SipSection = SipSection()
    registrar: RegistrarSection = RegistrarSection()
    admin: AdminSection = AdminSection()
    cdr: CdrSection = CdrSection()
    firewall: FirewallSection = FirewallSection()
    listeners: tuple[Listener, ...] = ()
    trunks: tuple[Trunk, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def trunk(self, name: str) -> Trunk:
        for t in self.trunks:
            if t.name == name:
                return t
        raise KeyError(name)

    def listener(self, name: str) -> Listener:
        for li in self.listeners:
            if li.name == name:
                return li
        raise KeyError(name)


# --------------------------------------------------------------------------- reading helpers


class _Reader:
    """Walks one TOML table, remembering the key path for error messages."""

    def __init__(self, file: str, table: Any, path: str) -> None:
        self.file = file
        self.path = path
        if not isinstance(table, dict):
            raise ConfigError(file, path or "<root>", f"expected a table, got {_tname(table)}")
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), reason)

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: Any) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"expected {_kinds(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(name, f"expected {_kinds(kinds)}, got {_tname(value)}")
        return value

    def required(self, name: str, kind: type[T]) -> T:
        if name not in self.table:
            raise self.error(name, "is required")
        return self.get(name, kind, None)

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> Any:
        value = self.get(name, str, default) if default is not None else self.required(name, str)
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float, integer: bool = False) -> Any:
        value = self.get(name, int if integer else float, default)
        if not lo <= value <= hi:
            raise self.error(name, f"must be between {lo:g} and {hi:g}; got {value!r}")
        return value

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, None)
        if value is None:
            return default
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(self.file, f"{self.key(name)}[{i}]",
                                  f"expected a string, got {_tname(item)}")
        return tuple(value)

    def path_value(self, name: str, default: Path | None, base: Path) -> Path | None:
        value = self.get(name, str, None)
        if value is None:
            return default
        p = Path(value)
        return p if p.is_absolute() else base / p

    def sub(self, name: str) -> _Reader:
        self.used.add(name)
        return _Reader(self.file, self.table.get(name, {}), self.key(name))

    def finish(self) -> None:
        for name in self.table:
            if name not in self.used:
                raise self.error(name, _unknown(name, tuple(self.used)))


def _unknown(name: str, known: tuple[str, ...]) -> str:
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(sorted(known))}"
    return f"unknown key{hint}"


# What keys each table may hold: None for a value, a dict for a table, [dict] for an array
# of tables. Built from the dataclasses, so a new field is a known key at once.
_Schema = dict[str, Any]


def _keys(cls: type, **tables: Any) -> _Schema:
    return {**{f.name: None for f in fields(cls)}, **tables}


def _schema() -> _Schema:
    pike = _keys(PikeSection)
    trunk = {k: v for k, v in _keys(Trunk, route=[_keys(Route)], rate_limit=_keys(RateLimit),
                                    pike=pike).items() if k not in ("peer_srv", "routes")}
    root = _keys(Config, gateway=_keys(GatewaySection), logging=_keys(LoggingSection),
                 tls=_keys(TlsSection), dtls=_keys(DtlsSection), media=_keys(MediaSection),
                 sip=_keys(SipSection), registrar=_keys(RegistrarSection),
                 admin=_keys(AdminSection), cdr=_keys(CdrSection),
                 firewall=_keys(FirewallSection, pike=pike), listener=[_keys(Listener)],
                 trunk=[trunk])
    return {k: v for k, v in root.items()
            if k not in ("path", "warnings", "listeners", "trunks")}


def _check_keys(file: str, table: Any, schema: _Schema, path: str) -> None:
    """Refuse unknown keys, in every table, before any value is read: a misspelt key or table
    must be reported by its own name, not as whatever its absence makes go wrong later.
    Wrong value types are left to the section readers."""
    if not isinstance(table, dict):
        return
    for name, value in table.items():
        key = f"{path}.{name}" if path else name
        if name not in schema:
            raise ConfigError(file, key, _unknown(name, tuple(schema)))
        sub = schema[name]
        if isinstance(sub, list) and isinstance(value, list):
            for i, item in enumerate(value):
                _check_keys(file, item, sub[0], f"{key}[{i}]")
        elif isinstance(sub, dict):
            _check_keys(file, value, sub, key)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tname(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "an array", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def parse_ip(value: str) -> str:
    """Canonical text of an IP literal, or ValueError."""
    return str(ipaddress.ip_address(value))


def parse_hostport(value: str, default_port: int | None = None) -> HostPort:
    """``host:port``, ``[v6]:port`` or, with a default port, a bare host. Raises ValueError."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", value)
    if m:
        host, port_text = parse_ip(m.group(1)), m.group(2)
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif value.count(":") > 1:
        raise ValueError("an IPv6 address with a port must be written [addr]:port")
    else:
        host, port_text = value, None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{value!r} has no port (write host:port)")
        port = default_port
    else:
        if not port_text.isdigit():
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    try:
        host = parse_ip(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
    return HostPort(host, port)


def _ip_field(r: _Reader, name: str, default: str | None) -> Any:
    value = r.get(name, str, default)
    if value is None:
        return None
    try:
        return parse_ip(value)
    except ValueError:
        raise r.error(name, f"{value!r} is not an IP address") from None


def _port(r: _Reader, name: str, default: int | None = None) -> int:
    value = r.get(name, int, default) if default is not None else r.required(name, int)
    if not 1 <= value <= 65535:
        raise r.error(name, f"port {value} is outside 1-65535")
    return value


def _hostport_field(r: _Reader, name: str, default: HostPort | None, default_port: int | None
                    ) -> HostPort:
    value = r.get(name, str, None) if default is not None else r.required(name, str)
    if value is None:
        assert default is not None
        return default
    try:
        return parse_hostport(value, default_port)
    except ValueError as exc:
        raise r.error(name, str(exc)) from None


# --------------------------------------------------------------------------- sections


def _gateway(r: _Reader) -> GatewaySection:
    d = GatewaySection()
    out = GatewaySection(
        name=r.get("name", str, d.name),
        domain=r.get("domain", str, d.domain),
        user_agent=r.get("user_agent", str, d.user_agent),
    )
    if not _HOSTNAME.match(out.domain):
        raise r.error("domain", f"{out.domain!r} is not a valid domain name")
    r.finish()
    return out


def _logging(r: _Reader, base: Path) -> LoggingSection:
    d = LoggingSection()
    level = r.choice("level", ("debug", "info", "warning", "error"), d.level)
    out = LoggingSection(level=level, format=r.choice("format", ("kv", "json"), d.format),
                         file=r.path_value("file", None, base),
                         security_file=r.path_value("security_file", None, base),
                         sip_message_text=r.get("sip_message_text", bool, False))
    r.finish()
    return out


def _tls(r: _Reader, base: Path) -> TlsSection:
    d = TlsSection()
    out = TlsSection(
        certificate=r.path_value("certificate", base / d.certificate, base),
        private_key=r.path_value("private_key", base / d.private_key, base),
        ca_file=r.path_value("ca_file", base / d.ca_file, base),
        min_version=r.choice("min_version", ("1.2", "1.3"), d.min_version),
        ciphers=r.get("ciphers", str, d.ciphers),
        handshake_timeout=r.number("handshake_timeout", d.handshake_timeout, 0.1, 120),
    )
    r.finish()
    return out


def _dtls(r: _Reader, base: Path) -> DtlsSection:
    d = DtlsSection()
    out = DtlsSection(
        certificate=r.path_value("certificate", base / d.certificate, base),
        private_key=r.path_value("private_key", base / d.private_key, base),
        handshake_timeout=r.number("handshake_timeout", d.handshake_timeout, 0.1, 120),
        accept_sha1_fingerprint=r.get("accept_sha1_fingerprint", bool,
                                      d.accept_sha1_fingerprint),
    )
    r.finish()
    return out


def _media(r: _Reader) -> MediaSection:
    d = MediaSection()
    out = MediaSection(
        address=_ip_field(r, "address", d.address),
        advertise_address=_ip_field(r, "advertise_address", None),
        port_min=_port(r, "port_min", d.port_min),
        port_max=_port(r, "port_max", d.port_max),
        inactivity_timeout=r.number("inactivity_timeout", d.inactivity_timeout, 1, 86400),
        nat_relatch_after=r.number("nat_relatch_after", d.nat_relatch_after, 0.1, 60),
        engine=r.choice("engine", ("native", "python"), d.engine),
    )
    if out.port_min % 2:
        raise r.error("port_min", f"must be even (RTP even, RTCP odd); got {out.port_min}")
    if out.port_max - out.port_min < 3:
        raise r.error("port_max", f"range {out.port_min}-{out.port_max} is empty or too small "
                      "(needs at least 4 ports)")
    r.finish()
    return out


def _sip(r: _Reader) -> SipSection:
    d = SipSection()
    out = SipSection(
        t1=r.number("t1", d.t1, 0.01, 10),
        t2=r.number("t2", d.t2, 0.1, 60),
        t4=r.number("t4", d.t4, 0.1, 60),
        max_message_size=r.number("max_message_size", d.max_message_size, 1024, 1 << 20, True),
        max_headers=r.number("max_headers", d.max_headers, 16, 1024, True),
        max_header_line=r.number("max_header_line", d.max_header_line, 256, 1 << 16, True),
        max_uri_length=r.number("max_uri_length", d.max_uri_length, 64, 1 << 16, True),
        tcp_idle_timeout=r.number("tcp_idle_timeout", d.tcp_idle_timeout, 1, 86400),
        max_connection_buffer=r.number("max_connection_buffer", d.max_connection_buffer,
                                       4096, 1 << 24, True),
        keepalive_interval=r.number("keepalive_interval", d.keepalive_interval, 0, 3600),
        session_expires=r.number("session_expires", d.session_expires, 90, 86400, True),
        header_timeout=r.number("header_timeout", d.header_timeout, 0.1, 600),
        max_connections_per_source=r.number("max_connections_per_source",
                                            d.max_connections_per_source, 1, 100000, True),
        first_message_timeout=r.number("first_message_timeout", d.first_message_timeout, 0,
                                       3600),
        dns_servers=_dns_servers(r),
    )
    if out.t2 < out.t1:
        raise r.error("t2", f"must be >= t1 ({out.t1}); got {out.t2}")
    r.finish()
    return out


def _registrar(r: _Reader) -> RegistrarSection:
    d = RegistrarSection()
    out = RegistrarSection(
        max_bindings=r.number("max_bindings", d.max_bindings, 1, 10**6, True),
        max_bindings_per_aor=r.number("max_bindings_per_aor", d.max_bindings_per_aor, 1, 100,
                                      True),
        min_expires=r.number("min_expires", d.min_expires, 1, 86400, True),
        max_expires=r.number("max_expires", d.max_expires, 1, 86400, True),
        default_expires=r.number("default_expires", d.default_expires, 1, 86400, True),
        flow_timer=r.number("flow_timer", d.flow_timer, 1, 3600, True),
    )
    if out.max_expires < out.min_expires:
        raise r.error("max_expires", f"must be >= min_expires ({out.min_expires}); "
                      f"got {out.max_expires}")
    if not out.min_expires <= out.default_expires <= out.max_expires:
        raise r.error("default_expires", f"must be between min_expires ({out.min_expires}) "
                      f"and max_expires ({out.max_expires}); got {out.default_expires}")
    r.finish()
    return out


def _dns_servers(r: _Reader) -> tuple[HostPort, ...]:
    out = []
    for i, text in enumerate(r.strings("dns_servers", ())):
        try:
            hp = HostPort(parse_ip(text), 53) if text.count(":") > 1 and "[" not in text \
                else parse_hostport(text, 53)
            parse_ip(hp.host)
        except ValueError as exc:
            raise ConfigError(r.file, f"{r.key('dns_servers')}[{i}]",
                              f"{text!r}: {exc} (write an IP address, ip:port or [v6]:port)"
                              ) from None
        out.append(hp)
    return tuple(out)


def _admin(r: _Reader, base: Path) -> AdminSection:
    d = AdminSection()
    hosts = r.strings("allowed_hosts", d.allowed_hosts)
    for i, h in enumerate(hosts):
        if not (_HOSTNAME.match(h) or _is_ip_text(h)):
            raise ConfigError(r.file, f"{r.key('allowed_hosts')}[{i}]",
                              f"{h!r} is neither a host name nor an IP address (no port)")
    out = AdminSection(
        enabled=r.get("enabled", bool, d.enabled),
        listen=_hostport_field(r, "listen", d.listen, None),
        cert_warning_days=r.number("cert_warning_days", d.cert_warning_days, 0, 3650, True),
        drain_timeout=r.number("drain_timeout", d.drain_timeout, 0, 86400),
        token_file=r.path_value("token_file", None, base),
        allowed_hosts=tuple(h.lower().strip("[]") for h in hosts),
    )
    r.finish()
    return out


def _is_ip_text(text: str) -> bool:
    try:
        parse_ip(text.strip("[]"))
    except ValueError:
        return False
    return True


def read_admin_token(file: str, path: Path) -> str:
    """The admin token: the file's first line, from a file nobody but its owner can read."""
    key = "admin.token_file"
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            token = fh.readline().strip()
    except OSError as exc:
        raise ConfigError(file, key, f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(file, key, f"{path} is not UTF-8 text") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(file, key, f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(file, key, f"{path} is readable by others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
    if len(token) < 16:
        raise ConfigError(file, key, f"{path}: the token must be at least 16 characters")
    return token


def _cdr(r: _Reader, base: Path) -> CdrSection:
    d = CdrSection()
    out = CdrSection(
        path=r.path_value("path", None, base),
        max_bytes=r.number("max_bytes", d.max_bytes, 4096, 1 << 40, True),
        backups=r.number("backups", d.backups, 0, 1000, True),
    )
    r.finish()
    return out


def _pike(p: _Reader, dp: PikeSection) -> PikeSection:
    pike = PikeSection(
        enabled=p.get("enabled", bool, dp.enabled),
        window=p.number("window", dp.window, 0.1, 3600),
        max_requests=p.number("max_requests", dp.max_requests, 1, 10**7, True),
        ban_time=p.number("ban_time", dp.ban_time, 1, 86400 * 7),
    )
    p.finish()
    return pike


def _firewall(r: _Reader) -> FirewallSection:
    d = FirewallSection()
    pike = _pike(r.sub("pike"), PikeSection())
    deny = r.strings("user_agent_deny", d.user_agent_deny)
    for i, pat in enumerate(deny):
        try:
            re.compile(pat)
        except re.error as exc:
            raise ConfigError(r.file, f"{r.key('user_agent_deny')}[{i}]",
                              f"not a valid regular expression: {exc}") from None
    out = FirewallSection(
        unknown_source=r.choice("unknown_source", ("drop", "403"), d.unknown_source),
        log_interval=r.number("log_interval", d.log_interval, 0, 86400),
        pike=pike,
        user_agent_deny=deny,
        srtp_auth_failure_threshold=r.number("srtp_auth_failure_threshold",
                                             d.srtp_auth_failure_threshold, 1, 10**9, True),
    )
    r.finish()
    return out


def _listener(r: _Reader) -> Listener:
    transport = r.choice("transport", ("udp", "tcp", "tls"), None)
    out = Listener(
        name=r.required("name", str),
        transport=transport,
        address=_ip_field(r, "address", None) or _raise(r.error("address", "is required")),
        port=_port(r, "port"),
        tls_client_auth=r.choice("tls_client_auth", ("require", "optional", "off"), "optional"),
    )
    r.finish()
    return out


def _raise(exc: Exception) -> Any:
    raise exc


def _route(r: _Reader) -> Route:
    out = Route(to=r.required("to", str), prefix=r.get("prefix", str, None),
                domain=r.get("domain", str, None),
                strip=r.number("strip", 0, 0, 64, True))
    if out.prefix is None and out.domain is None:
        raise r.error("to", "a route needs a prefix or a domain to match")
    r.finish()
    return out


def _rate_limit(r: _Reader) -> RateLimit:
    d = RateLimit()
    out = RateLimit(**{
        name: r.number(name, getattr(d, name), 0.01 if "per" in name else 1, 10**6,
                       integer="burst" in name)
        for name in RateLimit.__dataclass_fields__
    })
    r.finish()
    return out


_METHOD = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_HEADER = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")


def _names_service(text: object, peer: HostPort) -> bool:
    """A host name written without a port names a SIP service, not a host (RFC 3263 §4.2)."""
    try:
        parse_ip(peer.host)
    except ValueError:
        return isinstance(text, str) and ":" not in text
    return False


def _trunk(r: _Reader, pike: PikeSection) -> Trunk:
    d = Trunk(name="", side="legacy", transport="udp", peer=HostPort("0.0.0.0", 1), listener="",
              media="rtp")
    transport = r.choice("transport", ("udp", "tcp", "tls"), None)
    default_port = 5061 if transport == "tls" else 5060
    nets = []
    for i, text in enumerate(r.strings("allowed_sources", ())):
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(r.file, f"{r.key('allowed_sources')}[{i}]",
                              f"{text!r} is not an IP network (CIDR)") from None
    suites = r.strings("suites", DEFAULT_SUITES)
    for i, s in enumerate(suites):
        if s not in SRTP_SUITES:
            raise ConfigError(r.file, f"{r.key('suites')}[{i}]",
                              f"unknown SRTP suite {s!r}; known: {', '.join(SRTP_SUITES)}")
    if not suites:
        raise r.error("suites", "must list at least one suite")
    routes = []
    raw_routes = r.get("route", list, [])
    for i, item in enumerate(raw_routes):
        routes.append(_route(_Reader(r.file, item, f"{r.key('route')}[{i}]")))
    methods = tuple(m.upper() for m in r.strings("methods", d.methods))
    for i, m in enumerate(methods):
        if not _METHOD.match(m):
            raise ConfigError(r.file, f"{r.key('methods')}[{i}]", f"{m!r} is not a SIP method")
    registrar = r.get("registrar", bool, False)
    if registrar and "REGISTER" not in methods:
        methods += ("REGISTER",)   # the firewall screens methods per trunk
    pass_headers = r.strings("pass_headers", d.pass_headers)
    deny_headers = r.strings("deny_headers", ())
    for key, names in (("pass_headers", pass_headers), ("deny_headers", deny_headers)):
        for i, h in enumerate(names):
            if not _HEADER.match(h):
                raise ConfigError(r.file, f"{r.key(key)}[{i}]", f"{h!r} is not a header name")
    media_timeout = r.get("media_timeout", float, None)
    if media_timeout is not None and not 1 <= media_timeout <= 86400:
        raise r.error("media_timeout", f"must be between 1 and 86400; got {media_timeout}")
    peer = _hostport_field(r, "peer", None, default_port)
    out = Trunk(
        name=r.required("name", str),
        side=r.choice("side", ("legacy", "secure"), None),
        transport=transport,
        peer=peer,
        peer_srv=_names_service(r.table.get("peer"), peer),
        listener=r.required("listener", str),
        media=r.choice("media", ("rtp", "srtp", "srtp-optional", "dtls-srtp"), None),
        route_to=r.get("route_to", str, None),
        routes=tuple(routes),
        allowed_sources=tuple(nets),
        tls_identity=r.strings("tls_identity", ()),
        tls_fingerprints=r.strings("tls_fingerprints", ()),
        tls_server_name=r.get("tls_server_name", str, None),
        suites=suites,
        allow_sdes_over_insecure=r.get("allow_sdes_over_insecure", bool, False),
        accept_unencrypted_srtcp=r.get("accept_unencrypted_srtcp", bool, False),
        rtcp_mux=r.get("rtcp_mux", bool, d.rtcp_mux),
        nat_learning=r.get("nat_learning", bool, False),
        answer_options=r.get("answer_options", bool, True),
        trusted=r.get("trusted", bool, False),
        max_calls=r.number("max_calls", d.max_calls, 1, 10**6, True),
        media_timeout=media_timeout,
        end_call_on_media_timeout=r.get("end_call_on_media_timeout", bool, True),
        methods=methods,
        pass_headers=pass_headers,
        deny_headers=deny_headers,
        rate_limit=_rate_limit(r.sub("rate_limit")),
        pike=_pike(r.sub("pike"), pike) if "pike" in r.table else None,
        no_route_status=r.number("no_route_status", 404, 400, 699, True),
        registrar=registrar,
        refusal_warnings=r.get("refusal_warnings", bool, False),
    )
    r.finish()
    return out


# --------------------------------------------------------------------------- cross checks


def _check(cfg: Config, file: str) -> list[str]:
    warnings: list[str] = []
    names: set[str] = set()
    for i, li in enumerate(cfg.listeners):
        if li.name in names:
            raise ConfigError(file, f"listener[{i}].name", f"duplicate listener name {li.name!r}")
        names.add(li.name)
    bound: set[tuple[str, str, int]] = set()
    for i, li in enumerate(cfg.listeners):
        proto = "udp" if li.transport == "udp" else "tcp"
        if (proto, li.address, li.port) in bound:
            raise ConfigError(file, f"listener[{i}].port",
                              f"{proto} {li.address}:{li.port} is used by another listener")
        bound.add((proto, li.address, li.port))
    trunk_names: set[str] = set()
    for i, t in enumerate(cfg.trunks):
        if t.name in trunk_names:
            raise ConfigError(file, f"trunk[{i}].name", f"duplicate trunk name {t.name!r}")
        trunk_names.add(t.name)
    for i, t in enumerate(cfg.trunks):
        key = f"trunk[{i}]"
        try:
            li = cfg.listener(t.listener)
        except KeyError:
            raise ConfigError(file, f"{key}.listener",
                              f"no listener named {t.listener!r}") from None
        if li.transport != t.transport:
            raise ConfigError(file, f"{key}.transport",
                              f"trunk uses {t.transport} but listener {li.name!r} is "
                              f"{li.transport}")
        for target, where in [(t.route_to, f"{key}.route_to")] + [
                (rt.to, f"{key}.route[{j}].to") for j, rt in enumerate(t.routes)]:
            if target is not None and target not in trunk_names:
                raise ConfigError(file, where, f"no trunk named {target!r}")
            if target == t.name:
                raise ConfigError(file, where, "a trunk cannot route to itself")
        if t.route_to is None and not t.routes:
            warnings.append(f"{key} ({t.name}): no route_to or route: calls from it get "
                            f"{t.no_route_status}")
        if t.media in ("srtp", "srtp-optional") and t.transport != "tls":
            if not t.allow_sdes_over_insecure:
                raise ConfigError(file, f"{key}.media",
                                  f"SDES keys ({t.media}) would travel in clear over "
                                  f"{t.transport}; use transport = \"tls\", media = "
                                  "\"dtls-srtp\", or set allow_sdes_over_insecure = true")
            warnings.append(f"{key} ({t.name}): SDES keys travel over {t.transport} in clear "
                            "(allow_sdes_over_insecure = true)")
        if t.media == "dtls-srtp" and not set(t.suites) & set(DTLS_SRTP_SUITES):
            raise ConfigError(file, f"{key}.suites", "no suite has a DTLS-SRTP profile; list "
                              f"one of {', '.join(DTLS_SRTP_SUITES)}")
        if t.secure and t.media in ("rtp", "srtp-optional"):
            raise ConfigError(file, f"{key}.media",
                              "a secure trunk must use srtp or dtls-srtp (srtp-optional may "
                              "fall back to plain RTP)")
        if t.tls_identity and t.transport != "tls":
            raise ConfigError(file, f"{key}.tls_identity", "only meaningful with transport = tls")
        if t.secure and t.transport == "tls" and not t.tls_identity and not t.tls_fingerprints:
            warnings.append(f"{key} ({t.name}): no tls_identity: any certificate from the CA is "
                            "accepted for this trunk")
        if not t.allowed_sources:
            warnings.append(f"{key} ({t.name}): no allowed_sources: only the peer address "
                            f"{t.peer.host} is admitted")
    return warnings


def _check_files(cfg: Config, file: str) -> None:
    needs_tls = any(li.transport == "tls" for li in cfg.listeners) or any(
        t.transport == "tls" for t in cfg.trunks)
    if needs_tls:
        for name in ("certificate", "private_key", "ca_file"):
            _readable(file, f"tls.{name}", getattr(cfg.tls, name))
    if any(t.media == "dtls-srtp" for t in cfg.trunks):
        for name in ("certificate", "private_key"):
            _readable(file, f"dtls.{name}", getattr(cfg.dtls, name))
    if cfg.admin.enabled and cfg.admin.token_file is not None:
        read_admin_token(file, cfg.admin.token_file)


def _readable(file: str, key: str, path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError(file, key, f"cannot read {path}: {exc.strerror or exc}") from None


def load_config(path: str | os.PathLike[str], *, check_files: bool = True) -> Config:
    """Read and validate a config file; raise ConfigError naming file, key and reason.

    Relative paths inside the file (keys, logs, CDRs) are relative to the file's own directory,
    so a config means the same thing whatever directory the gateway is started from.
    """
    p = Path(path)
    file = str(p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "<file>", "no such file") from None
    except OSError as exc:
        raise ConfigError(file, "<file>", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "<file>", f"not UTF-8: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "<file>", f"TOML syntax error: {exc}") from None
    return config_from_dict(raw, file=file, base=p.resolve().parent, check_files=check_files)


def config_from_dict(raw: dict[str, Any], *, file: str = "<config>", base: Path | None = None,
                     check_files: bool = True) -> Config:
    base = base or Path.cwd()
    root = _Reader(file, raw, "")
    _check_keys(file, raw, _schema(), "")
    section: Callable[[str], _Reader] = root.sub
    firewall = _firewall(section("firewall"))
    listeners = tuple(
        _listener(_Reader(file, item, f"listener[{i}]"))
        for i, item in enumerate(root.get("listener", list, []))
    )
    trunks = tuple(
        _trunk(_Reader(file, item, f"trunk[{i}]"), firewall.pike)
        for i, item in enumerate(root.get("trunk", list, []))
    )
    if not listeners:
        raise ConfigError(file, "listener", "at least one [[listener]] is required")
    cfg = Config(
        path=Path(file),
        gateway=_gateway(section("gateway")),
        logging=_logging(section("logging"), base),
        tls=_tls(section("tls"), base),
        dtls=_dtls(section("dtls"), base),
        media=_media(section("media")),
        sip=_sip(section("sip")),
        registrar=_registrar(section("registrar")),
        admin=_admin(section("admin"), base),
        cdr=_cdr(section("cdr"), base),
        firewall=firewall,
        listeners=listeners,
        trunks=trunks,
    )
    root.finish()
    warnings = _check(cfg, file)
    if check_files:
        _check_files(cfg, file)
    return Config(**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__ if f != "warnings"},
                  warnings=tuple(warnings))
