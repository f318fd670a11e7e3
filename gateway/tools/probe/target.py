"""What the probe may talk to, and how much: only endpoints the operator named, bounded sends.

A target is one explicit ``TRANSPORT:HOST:PORT`` (or a ``sip:``/``sips:`` URI with a port).
Ranges, lists, wildcards, unspecified, multicast and broadcast addresses, names that resolve to
several addresses and missing ports are refused: the probe never discovers or sweeps. Media may
only go to the hosts of named endpoints (and to the address the target itself signalled from on
the legacy side), never to an address an SDP body merely claims.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Transport = Literal["udp", "tcp", "tls"]
Address = tuple[str, int]
_URI = re.compile(r"^(sips?):(?:[^@;]*@)?(\[[^\]]+\]|[^:;]+)(?::(\d+))?((?:;[^;]*)*)$", re.I)
_PLAIN = re.compile(r"^(udp|tcp|tls):(\[[^\]]+\]|[^:]+):(\d+)$", re.I)
_HOSTPORT = re.compile(r"^(\[[^\]]+\]|[^:]+):(\d+)$")


class ScopeError(ValueError):
    """A target that is not one explicit endpoint, or a send outside the named ones."""


class BudgetExceeded(RuntimeError):
    """The run spent its packet or time budget; the check in progress stops there."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str  # an IP literal, after the one permitted resolution
    port: int
    transport: Transport
    name: str | None = None  # the host name the operator gave, if any

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def _check_host(text: str, resolve: Callable[[str], list[str]]) -> tuple[str, str | None]:
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not host or any(c in host for c in "*/,? ") or re.search(r"\d-\d", host):
        raise ScopeError(f"{text!r} is not one host (ranges, lists and wildcards are refused)")
    try:
        ip = ipaddress.ip_address(host)
        name = None
    except ValueError:
        addrs = sorted(set(resolve(host)))
        if len(addrs) != 1:
            raise ScopeError(f"{host!r} resolves to {len(addrs)} addresses "
                             f"({', '.join(addrs) or 'none'}); name one address") from None
        ip = ipaddress.ip_address(addrs[0])
        name = host
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.ip_address("255.255.255.255"):
        raise ScopeError(f"{ip} is not a unicast host address")
    return str(ip), name


def system_resolve(name: str) -> list[str]:
    try:
        return [str(i[4][0]) for i in socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)]
    except socket.gaierror:
        return []


def parse_endpoint(text: str, *, resolve: Callable[[str], list[str]] = system_resolve
                   ) -> Endpoint:
    """``tls:HOST:PORT``, ``udp:HOST:PORT``, ``tcp:HOST:PORT``, ``sip:HOST:PORT;transport=X``
    or ``sips:HOST:PORT``. The port is never guessed."""
    text = text.strip()
    transport: str
    m = _PLAIN.match(text)
    if m:
        transport, host, port = m.group(1).lower(), m.group(2), m.group(3)
    else:
        u = _URI.match(text)
        if u is None:
            raise ScopeError(f"{text!r}: give TRANSPORT:HOST:PORT (udp, tcp or tls) or a "
                             "sip:/sips: URI with host and port")
        scheme, host, port, params = u.group(1).lower(), u.group(2), u.group(3), u.group(4)
        if port is None:
            raise ScopeError(f"{text!r}: no port; the probe does not guess one")
        found = re.search(r";transport=([a-z]+)", params or "", re.I)
        transport = "tls" if scheme == "sips" else (found.group(1).lower() if found else "udp")
    if transport not in ("udp", "tcp", "tls"):
        raise ScopeError(f"{text!r}: transport {transport!r} is not udp, tcp or tls")
    number = int(port)
    if not 0 < number < 65536:
        raise ScopeError(f"{text!r}: port {number} out of range")
    ip, name = _check_host(host, resolve)
    return Endpoint(ip, number, transport, name)  # type: ignore[arg-type]


def parse_host(text: str, *, resolve: Callable[[str], list[str]] = system_resolve) -> str:
    """One explicit host (``--media-host``): the same refusals as a target's host."""
    return _check_host(text.strip(), resolve)[0]


def parse_local(text: str) -> Address:
    """A local ``HOST:PORT`` to listen on (the probe's legacy side); port 0 is not allowed, since
    the target must be configured with it."""
    m = _HOSTPORT.match(text.strip())
    if m is None:
        raise ScopeError(f"{text!r}: give HOST:PORT")
    host = m.group(1).strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ScopeError(f"{text!r}: the legacy side must be an IP address") from None
    port = int(m.group(2))
    if not 0 < port < 65536:
        raise ScopeError(f"{text!r}: port out of range")
    return (host, port)


@dataclass
class Guard:
    """Every packet the probe sends passes here: in scope, within count and within time."""

    endpoints: frozenset[Address]
    media_hosts: set[str]
    max_packets: int
    seconds: float
    clock: Callable[[], float] = time.monotonic
    sent: int = 0
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def spend(self, n: int = 1) -> None:
        if self.clock() - self.started > self.seconds:
            raise BudgetExceeded(f"time budget of {self.seconds:.0f} s spent")
        if self.sent + n > self.max_packets:
            raise BudgetExceeded(f"packet budget of {self.max_packets} spent")
        self.sent += n

    def signalling(self, addr: Address) -> None:
        if (addr[0], addr[1]) not in self.endpoints:
            raise ScopeError(f"{addr[0]}:{addr[1]} is not a named target")
        self.spend()

    def media(self, addr: Address) -> None:
        if addr[0] not in self.media_hosts:
            raise ScopeError(f"media address {addr[0]} is not a named host")
        self.spend()

    @property
    def remaining(self) -> float:
        return max(0.0, self.seconds - (self.clock() - self.started))
