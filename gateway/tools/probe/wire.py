"""The probe's sockets: one SIP flow to a named endpoint, and plain UDP for media.

Blocking sockets with deadlines: the probe does one thing at a time, and every wait is bounded.
Streams are cut into messages by the gateway's own ``StreamFramer``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

from gateway.sip.errors import SipParseError
from gateway.sip.framing import Keepalive, StreamFramer
from gateway.sip.message import DEFAULT_LIMITS
from gateway.tools.probe.target import Address, Endpoint, Guard

MAX_BUFFER = 262144


class ChannelError(OSError):
    """The flow could not be opened or broke (refused, reset, TLS alert)."""


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class Channel:
    """One flow from the probe to one endpoint: a UDP socket, or a TCP/TLS connection."""

    def __init__(self, endpoint: Endpoint, guard: Guard, *, ssl_context: ssl.SSLContext | None
                 = None, server_name: str | None = None, local_ip: str | None = None,
                 timeout: float = 3.0) -> None:
        self.endpoint = endpoint
        self.guard = guard
        self.closed_by_peer = False
        self._framer: StreamFramer | None = None
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self.peer_der: bytes | None = None
        fam = _family(endpoint.host)
        if endpoint.transport == "udp":
            sock = socket.socket(fam, socket.SOCK_DGRAM)
            sock.bind((local_ip or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), 0))
            sock.connect(endpoint.address)
            self.sock: socket.socket = sock
        else:
            guard.signalling(endpoint.address)  # the connection attempt counts as a send
            try:
                raw = socket.create_connection(endpoint.address, timeout=timeout,
                                               source_address=(local_ip, 0) if local_ip else None)
            except OSError as exc:
                raise ChannelError(f"connect {endpoint}: {exc}") from None
            if endpoint.transport == "tls":
                ctx = ssl_context or ssl.create_default_context()
                try:
                    raw = ctx.wrap_socket(raw, server_hostname=server_name)
                except (ssl.SSLError, OSError) as exc:
                    raw.close()
                    raise ChannelError(f"TLS handshake with {endpoint}: {_reason(exc)}") from None
                self.tls_version = raw.version()
                cipher = raw.cipher()
                self.tls_cipher = cipher[0] if cipher else None
                self.peer_der = raw.getpeercert(binary_form=True)
            self.sock = raw
            self._framer = StreamFramer(DEFAULT_LIMITS, MAX_BUFFER, expect_pong=True)
        self.local: Address = self.sock.getsockname()[:2]

    def send(self, data: bytes) -> None:
        self.guard.signalling(self.endpoint.address)
        try:
            if self._framer is None:
                self.sock.send(data)
            else:
                self.sock.sendall(data)
        except OSError as exc:
            raise ChannelError(f"send to {self.endpoint}: {_reason(exc)}") from None

    def receive(self, timeout: float) -> list[bytes]:
        """Whole messages that arrive within ``timeout`` (at least one, or none at the end)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, BlockingIOError):
                return []
            except ssl.SSLError as exc:
                self.closed_by_peer = True
                raise ChannelError(f"TLS from {self.endpoint}: {_reason(exc)}") from None
            except OSError as exc:  # ICMP port unreachable on UDP, reset on TCP
                self.closed_by_peer = True
                raise ChannelError(f"receive from {self.endpoint}: {_reason(exc)}") from None
            if self._framer is None:
                return [data]
            if not data:
                self.closed_by_peer = True
                return []
            try:
                out = [m for m in self._framer.feed(data) if not isinstance(m, Keepalive)]
            except SipParseError as exc:
                raise ChannelError(f"unframeable stream from {self.endpoint}: {exc}") from None
            if out:
                return out  # type: ignore[return-value]
        return []

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


class MediaSocket:
    """A UDP socket for RTP that only sends to hosts the guard allows."""

    def __init__(self, guard: Guard, local_ip: str) -> None:
        self.guard = guard
        self.sock = socket.socket(_family(local_ip), socket.SOCK_DGRAM)
        self.sock.bind((local_ip, 0))
        self.local: Address = self.sock.getsockname()[:2]

    def send(self, data: bytes, addr: Address) -> None:
        self.guard.media(addr)
        with contextlib.suppress(OSError):
            self.sock.sendto(data, addr)

    def drain(self, timeout: float, limit: int = 500) -> list[tuple[bytes, Address]]:
        """Datagrams that arrive within ``timeout`` (at most ``limit``)."""
        out: list[tuple[bytes, Address]] = []
        deadline = time.monotonic() + timeout
        while len(out) < limit and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                break
            out.append((data, addr[:2]))
        return out

    def close(self) -> None:
        self.sock.close()
