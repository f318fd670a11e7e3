"""SIP transports on asyncio (uvloop): UDP, TCP and TLS listeners plus outbound connections.

A transport here is "something that delivers framed messages to and from a peer identity": every
message goes up as raw bytes with a ``MessageSource`` (transport, listener, address, connection,
TLS identities); the stack parses. Streams are framed by ``StreamFramer`` and guarded by a buffer
limit, an idle timeout, a header-section deadline (slow loris) and a TLS handshake timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import Config, HostPort, Listener, Transport, Trunk
from gateway.ops.log import get_logger, security_event
from gateway.sip import trace
from gateway.sip.errors import SipParseError, TransportFailure
from gateway.sip.framing import PING, PONG, Keepalive, StreamFramer
from gateway.sip.identity import (
    cert_fingerprint,
    cert_identities,
    fingerprint_matches,
    identity_matches,
)
from gateway.sip.message import ParseLimits
from gateway.sip.resolver import Resolver
from gateway.sip.streams import ByteStream, PlainStream, TlsStream
from gateway.sip.tls import client_context, server_context

log = get_logger("sip")
_MAX_WRITE_BUFFER = 1 << 20  # a peer that stops reading is cut off, not buffered forever
_WILDCARDS = frozenset({"0.0.0.0", "::"})  # as getsockname() spells an unspecified bind


@dataclass(frozen=True, slots=True)
class MessageSource:
    """Where a message came from (field names match ``gateway.policy.acl.Source``)."""

    transport: str
    listener: str
    ip: str
    port: int
    connection_id: int | None = None
    tls_identities: tuple[str, ...] = ()
    tls_fingerprint: str | None = None

    @property
    def addr(self) -> tuple[str, int]:
        return (self.ip, self.port)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes and what the peer must prove (RFC 5922 identity, pinned certs)."""

    transport: Transport
    host: str
    port: int
    listener: str | None = None
    server_name: str | None = None
    tls_identity: tuple[str, ...] = ()
    tls_fingerprints: tuple[str, ...] = ()
    srv: bool = False  # host names a SIP service: locate it by SRV (RFC 3263), port = default
    # The connection a dialog arrived on: used while it is open, whatever host and port say
    # (RFC 3261 §18.2.2, RFC 5923); host and port are where to connect once it has closed.
    connection: int | None = None

    @classmethod
    def from_trunk(cls, trunk: Trunk, dest: HostPort | None = None,
                   connection: int | None = None) -> Target:
        peer = dest or trunk.peer
        return cls(trunk.transport, peer.host, peer.port, trunk.listener, trunk.tls_server_name,
                   trunk.tls_identity, trunk.tls_fingerprints,
                   trunk.peer_srv and peer == trunk.peer, connection)

    @property
    def key(self) -> tuple[str, str, int, str | None]:
        return (self.transport, self.host, self.port, self.server_name)


OnMessage = Callable[[bytes, MessageSource], None]
OnFrameError = Callable[[bytes, MessageSource, SipParseError], None]  # answers on the connection
Admit = Callable[[MessageSource], bool]


class Connection:
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(self, cid: int, source: MessageSource, stream: ByteStream,
                 framer: StreamFramer, outbound: bool) -> None:
        self.id = cid
        self.source = source
        self.stream = stream
        self.framer = framer
        self.outbound = outbound
        self.closed = False
        self.sent_by_ports: set[int] = set()  # ports the peer's Vias named (see note_sent_by)
        self.idle_timeout: float | None = None  # a registered flow's own (see watch_flow)
        self.trace_text = False   # sip.message events carry the whole text
        self.watchdog: _Deadline | None = None

    def write(self, data: bytes) -> bool:
        if self.closed or self.stream.is_closing():
            return False
        if self.stream.pending_output() > _MAX_WRITE_BUFFER:
            log.warning("sip.connection_stalled", peer=f"{self.source.ip}:{self.source.port}")
            self.close()
            return False
        try:
            self.stream.write(data)
        except (ssl.SSLError, OSError):
            self.close()
            return False
        if trace.enabled() and data not in (PING, PONG):
            trace.trace("out", self.source.transport, self.source.addr, self.id, data,
                        self.trace_text)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransports, listener: Listener) -> None:
        self.owner = owner
        self.name = listener.name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data in (PING, PONG):  # RFC 5626 keep-alives over UDP are answered/ignored as-is
            if data == PING and self.transport is not None:
                self.transport.sendto(PONG, addr)
            return
        self.owner.deliver(data, MessageSource("udp", self.name, addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip.udp_error", listener=self.name, error=str(exc))


class SipTransports:
    """All listeners and connections of one gateway."""

    def __init__(self, config: Config, on_message: OnMessage, *,
                 on_frame_error: OnFrameError | None = None, admit: Admit | None = None,
                 on_tls_failure: Callable[[MessageSource, str], None] | None = None,
                 on_closed: Callable[[int], None] | None = None) -> None:
        self.config = config
        self._on_tls_failure = on_tls_failure
        self._on_closed = on_closed
        self._on_message = on_message
        self._on_frame_error = on_frame_error
        self._admit = admit
        self._limits = ParseLimits.from_config(config.sip)
        self._ids = itertools.count(1)
        self._udp: dict[str, _Udp] = {}
        self._servers: dict[str, asyncio.Server] = {}
        self._bound: dict[str, tuple[str, int]] = {}
        self._conns: dict[int, Connection] = {}
        self._outbound: dict[tuple[str, str, int, str | None], Connection] = {}
        self._connecting: dict[tuple[str, str, int, str | None], asyncio.Future[Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._server_ctx: dict[str, ssl.SSLContext] = {}
        self._client_ctx: ssl.SSLContext | None = None
        self.counters = {"accepted": 0, "refused": 0, "tls_failures": 0, "tls_handshakes": 0,
                         "tls_unreachable": 0, "framing_errors": 0, "timeouts": 0,
                         "reset_before_accept": 0, "refused_per_source": 0,
                         "first_message_timeouts": 0}
        self.max_connections = 10000  # inbound, handshaking ones included; more are closed
        self._handshaking = 0
        self._per_source: Counter[str] = Counter()  # inbound connections by peer IP
        self.resolver = Resolver(config.sip.dns_servers)
        self._located: dict[tuple[str, str, int, str | None],
                            tuple[float, list[tuple[str, int]]]] = {}
        self._locating: dict[tuple[str, str, int, str | None],
                             asyncio.Future[list[tuple[str, int]]]] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.reload_tls()
        for li in self.config.listeners:
            if li.transport == "udp":
                proto = _Udp(self, li)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda p=proto: p, local_addr=(li.address, li.port))
                self._udp[li.name] = proto
                self._bound[li.name] = transport.get_extra_info("sockname")[:2]
            else:
                server = await asyncio.start_server(
                    lambda r, w, li=li: self._accepted(li, r, w), li.address, li.port)
                self._servers[li.name] = server
                self._bound[li.name] = server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        for proto in self._udp.values():
            if proto.transport is not None:
                proto.transport.close()
        for conn in list(self._conns.values()):
            conn.close()
        if self._tasks:  # closed connections end their read loops by themselves
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        self._udp.clear()

    def reload_tls(self, config: Config | None = None) -> None:
        """New SSL contexts (and SIP limits) for new connections; established ones keep theirs.

        All-or-nothing: if a certificate or key cannot be loaded, this raises (ssl.SSLError or
        OSError) and everything stays as it was. Listeners are not re-bound."""
        cfg = config or self.config
        contexts = {li.name: server_context(cfg.tls, li.tls_client_auth)
                    for li in cfg.listeners if li.transport == "tls"}
        needs_client = contexts or any(t.transport == "tls" for t in cfg.trunks)
        client = client_context(cfg.tls) if needs_client else None
        if cfg.sip.dns_servers != self.config.sip.dns_servers:
            self.resolver = Resolver(cfg.sip.dns_servers)
            self._located.clear()
        self.config = cfg
        self._limits = ParseLimits.from_config(cfg.sip)
        self._server_ctx = contexts
        self._client_ctx = client

    # ------------------------------------------------------------------ addresses
    def bound(self, listener: str) -> tuple[str, int]:
        """The address a listener actually bound (port 0 resolved)."""
        return self._bound[listener]

    def advertised(self, listener: str, toward: str | None = None) -> tuple[str, int]:
        """Address to put in Via and Contact for a listener. A wildcard bind (0.0.0.0, ::) is
        replaced by the local address the kernel would use toward ``toward`` (an IP; no packet
        is sent), else by the gateway's domain."""
        host, port = self._bound[listener]
        if host not in _WILDCARDS:
            return host, port
        if toward is not None and _is_ip(toward):
            peer = toward.strip("[]")
            family = socket.AF_INET6 if ":" in peer else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as probe:
                    probe.connect((peer, 9))
                    return probe.getsockname()[0], port
            except OSError:
                pass
        return self.config.gateway.domain, port

    def _source_addr(self, listener: str) -> tuple[str, int] | None:
        """Where outbound connections of a listener's trunks come from: its own address (port
        0), so multi-homed peers see the address they route and filter (RFC 5923 reuse, ACLs);
        a wildcard bind leaves the choice to the kernel."""
        bound = self._bound.get(listener)
        if bound is None or bound[0] in _WILDCARDS:
            return None
        return (bound[0], 0)

    def listener_for(self, transport: str, preferred: str | None = None) -> Listener | None:
        listeners = self.config.listeners
        for li in listeners:
            if li.name == preferred and li.transport == transport:
                return li
        return next((li for li in listeners if li.transport == transport), None)

    def connection(self, cid: int) -> Connection | None:
        return self._conns.get(cid)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ inbound
    def deliver(self, data: bytes, source: MessageSource) -> None:
        if trace.enabled():
            trace.trace("in", source.transport, source.addr, source.connection_id, data,
                        self.config.logging.sip_message_text)
        self._on_message(data, source)

    async def _accepted(self, listener: Listener, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve_inbound(listener, reader, writer)
        except asyncio.CancelledError:
            writer.close()  # stop() mid-accept: end quietly (asyncio reports a cancelled callback)
        except Exception:  # a bug costs this connection, never a line outside the log
            log.error("sip.internal_error", listener=listener.name, where="accept",
                      exc_info=True)
            writer.close()
        finally:
            self._tasks.discard(task)

    async def _serve_inbound(self, listener: Listener, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not peer:  # reset before the accept completed: no one to serve or to count against
            self.counters["reset_before_accept"] += 1
            writer.close()
            return
        source = MessageSource(listener.transport, listener.name, peer[0], peer[1])
        if self._admit is not None and not self._admit(source):
            self.counters["refused"] += 1
            writer.close()
            return
        if len(self._conns) + self._handshaking >= self.max_connections:
            self.counters["refused"] += 1
            security_event("sip.connection_limit", peer=_peer(source),
                           listener=listener.name, limit=self.max_connections, scope="total")
            writer.close()
            return
        cap = self.config.sip.max_connections_per_source
        if self._per_source[source.ip] >= cap:  # one source must not take every connection
            self.counters["refused"] += 1
            self.counters["refused_per_source"] += 1
            security_event("sip.connection_limit", peer=_peer(source),
                           listener=listener.name, limit=cap, scope="source")
            writer.close()
            return
        self._per_source[source.ip] += 1
        try:
            await self._serve_admitted(listener, source, reader, writer)
        finally:
            left = self._per_source[source.ip] - 1
            if left > 0:
                self._per_source[source.ip] = left
            else:
                del self._per_source[source.ip]

    async def _serve_admitted(self, listener: Listener, source: MessageSource,
                              reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        stream: ByteStream = PlainStream(reader, writer)
        if listener.transport == "tls":
            self._handshaking += 1
            try:
                tls = await self._handshake(listener, source, reader, writer)
            finally:
                self._handshaking -= 1
            if tls is None:
                writer.close()
                return
            stream = tls
            source = _with_peer_cert(source, tls)
        self.counters["accepted"] += 1
        conn = self._register(source, stream, outbound=False)
        await self._read_loop(conn)

    async def _handshake(self, listener: Listener, source: MessageSource,
                         reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> TlsStream | None:
        ctx = self._server_ctx.get(listener.name)
        if ctx is None:
            return None
        tls = TlsStream(ctx, reader, writer, server_side=True)
        try:
            await tls.handshake(self.config.tls.handshake_timeout)
        except (OSError, TimeoutError) as exc:
            self._tls_failed(source, _tls_reason(exc))
            return None
        self.counters["tls_handshakes"] += 1
        return tls

    def _tls_failed(self, source: MessageSource, reason: str, **fields: object) -> None:
        self.counters["tls_failures"] += 1
        security_event("tls.handshake_failed", peer=f"{source.ip}:{source.port}",
                       listener=source.listener, reason=reason, **fields)
        if self._on_tls_failure is not None:
            self._on_tls_failure(source, reason)

    def _outbound_tls_failed(self, where: MessageSource, reason: str, **fields: object) -> None:
        """A connection we opened failed its handshake. A peer we dial is not attacking us, so
        the firewall never hears of it. A certificate that does not verify or match is still a
        security event (someone may sit in the path); anything else (reset, EOF, timeout, e.g.
        a phone without a TLS server) is our own reachability failure, logged and counted
        (``tls_unreachable``) as such."""
        peer = f"{where.ip}:{where.port}"
        if _certificate_failure(reason):
            self.counters["tls_failures"] += 1
            security_event("tls.handshake_failed", peer=peer, listener=where.listener,
                           reason=reason, direction="outbound", **fields)
        else:
            self.counters["tls_unreachable"] += 1
            log.warning("tls.handshake_failed", peer=peer, listener=where.listener, reason=reason,
                        direction="outbound", classification="reachability", **fields)

    def _register(self, source: MessageSource, stream: ByteStream,
                  outbound: bool) -> Connection:
        cid = next(self._ids)
        source = MessageSource(source.transport, source.listener, source.ip, source.port, cid,
                               source.tls_identities, source.tls_fingerprint)
        framer = StreamFramer(self._limits, self.config.sip.max_connection_buffer,
                              expect_pong=outbound)
        conn = Connection(cid, source, stream, framer, outbound)
        conn.trace_text = self.config.logging.sip_message_text
        self._conns[cid] = conn
        return conn

    def attach(self, source: MessageSource, stream: ByteStream, *,
               outbound: bool = False) -> Connection:
        """Carry SIP over a stream another transport established (the plug-in point for
        transports beyond UDP/TCP/TLS); framing, limits and timeouts apply as for TCP."""
        conn = self._register(source, stream, outbound)
        self._spawn(self._read_loop(conn))
        return conn

    async def _read_loop(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        sip = self.config.sip
        header_deadline: float | None = None
        reason = "closed by peer"
        watchdog: _Deadline | None = None
        try:
            async with asyncio.timeout(None) as scope:
                # a connection a peer opened must deliver a whole message soon, or it is a
                # socket held for nothing (idle floods); later silence is ordinary idleness
                first: float | None = (loop.time() + sip.first_message_timeout
                                       if not conn.outbound and sip.first_message_timeout
                                       else None)
                idle_deadline = loop.time() + (conn.idle_timeout or sip.tcp_idle_timeout)
                watchdog = _Deadline(loop, scope, min(idle_deadline, first or idle_deadline))
                conn.watchdog = watchdog
                while not conn.closed:
                    data = await conn.stream.read(65536)
                    if not data:
                        break
                    now = loop.time()
                    try:
                        items = conn.framer.feed(data)
                    except SipParseError as exc:
                        reason = f"framing error: {exc.reason}"
                        self._frame_error(conn, exc)
                        break
                    for item in items:
                        if isinstance(item, Keepalive):
                            if item.ping:
                                conn.write(PONG)
                            continue
                        self.deliver(item, conn.source)
                        first = None
                    # after the messages: one may have made this a registered flow (watch_flow)
                    idle_deadline = now + (conn.idle_timeout or sip.tcp_idle_timeout)
                    if not conn.framer.partial:
                        header_deadline = None
                    elif items or header_deadline is None:
                        header_deadline = now + sip.header_timeout
                    at = min(d for d in (idle_deadline, header_deadline, first)
                             if d is not None)
                    watchdog.move(at, header_deadline)
        except TimeoutError:
            if watchdog is None or not scope.expired():
                reason = "error: TimeoutError"
            else:
                self.counters["timeouts"] += 1
                if watchdog.header:
                    reason = "header timeout"
                    security_event("sip.slow_header", peer=_peer(conn.source),
                                   listener=conn.source.listener,
                                   buffered=conn.framer.buffered)
                elif first is not None and loop.time() >= first:
                    reason = "first message timeout"
                    self.counters["first_message_timeouts"] += 1
                else:
                    reason = "idle timeout"
        except OSError as exc:  # includes ssl.SSLError
            reason = f"error: {type(exc).__name__}"
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self._drop(conn)
            log.debug("sip.connection_closed", peer=_peer(conn.source), reason=reason,
                      connection=conn.id)

    def _frame_error(self, conn: Connection, exc: SipParseError) -> None:
        self.counters["framing_errors"] += 1
        log.info_limited("sip.framing_error", peer=_peer(conn.source), status=exc.status,
                         reason=exc.reason)
        if self._on_frame_error is not None:
            self._on_frame_error(conn.framer.pending[: self._limits.max_message_size],
                                 conn.source, exc)

    def _drop(self, conn: Connection) -> None:
        conn.close()
        if self._conns.pop(conn.id, None) is None:
            return
        for key, c in list(self._outbound.items()):
            if c is conn:
                del self._outbound[key]
        if self._on_closed is not None:
            self._on_closed(conn.id)

    # ------------------------------------------------------------------ sending
    def send_datagram(self, listener: str | None, data: bytes, addr: tuple[str, int]) -> None:
        """Send from a UDP listener's socket; ``addr`` must hold an IP (see ``resolved``)."""
        proto = self._udp_for(listener)
        if proto is None or proto.transport is None:
            raise TransportFailure("no UDP listener to send from")
        try:
            proto.transport.sendto(data, addr)
        except (OSError, ValueError) as exc:  # ValueError: an address of the other family
            raise TransportFailure(f"cannot send to {addr[0]}:{addr[1]}: "
                                   f"{type(exc).__name__}") from None
        if trace.enabled():
            trace.trace("out", "udp", addr, None, data, self.config.logging.sip_message_text)

    def _udp_for(self, listener: str | None) -> _Udp | None:
        return self._udp.get(listener or "") or next(iter(self._udp.values()), None)

    def located(self, target: Target) -> tuple[str, int] | None:
        """Where a datagram for ``target`` goes right now: the target itself if its host is an
        IP, else the first address of a fresh lookup (None: ``locate`` first). The choice
        holds for the answer's TTL, so retransmissions go where the original went."""
        if _is_ip(target.host):
            return target.host.strip("[]"), target.port
        hit = self._located.get(target.key)
        if hit is not None and hit[0] > asyncio.get_running_loop().time():
            return hit[1][0]
        return None

    def _family(self, transport: str, listener: str | None) -> int:
        """Look up addresses of the family the sending socket can reach."""
        if transport == "udp":
            proto = self._udp_for(listener)
            if proto is not None and proto.transport is not None:
                sock = proto.transport.get_extra_info("socket")
                if sock is not None:
                    return int(sock.family)
            return socket.AF_INET
        li = self.listener_for(transport, listener)
        bound = self._bound.get(li.name) if li is not None else None
        if bound is None or bound[0] in _WILDCARDS:  # unbound connects may use either family
            return socket.AF_UNSPEC
        return socket.AF_INET6 if ":" in bound[0] else socket.AF_INET

    def demote(self, target: Target, addr: tuple[str, int]) -> None:
        """A located address that failed (connect, TLS, or a UDP transaction timeout) goes last
        until the answer expires, so the next request tries the next one (RFC 3263 §4.3)."""
        hit = self._located.get(target.key)
        if hit is not None and len(hit[1]) > 1 and addr in hit[1]:
            self._located[target.key] = (hit[0], [a for a in hit[1] if a != addr] + [addr])

    async def locate(self, target: Target) -> list[tuple[str, int]]:
        """Addresses to try for ``target`` in order (RFC 3263: SRV for a service, else A/AAAA),
        cached for the DNS answers' TTL. Raises TransportFailure."""
        if _is_ip(target.host):
            return [(target.host.strip("[]"), target.port)]
        loop = asyncio.get_running_loop()
        key = target.key
        hit = self._located.get(key)
        if hit is not None and hit[0] > loop.time():
            return hit[1]
        pending = self._locating.get(key)  # a burst of requests makes one lookup, not one each
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[list[tuple[str, int]]] = loop.create_future()
        self._locating[key] = fut
        try:
            addrs, expires = await self.resolver.locate(
                target.transport, target.host, target.port, target.srv,
                self._family(target.transport, target.listener))
        except TransportFailure as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            self._locating.pop(key, None)
        if len(self._located) > 4096:
            self._located.clear()
        self._located[key] = (expires, addrs)
        fut.set_result(addrs)
        return addrs

    def note_sent_by(self, cid: int, port: int) -> None:
        """Remember the port a request's Via sent-by named on inbound connection ``cid``: the
        peer listens there, so requests for that port may reuse the connection (RFC 5923)."""
        conn = self._conns.get(cid)
        if conn is not None and len(conn.sent_by_ports) < 16:
            conn.sent_by_ports.add(port)

    def watch_flow(self, cid: int, idle: float) -> None:
        """Close connection ``cid`` once it has been silent for ``idle`` seconds (a registered
        flow whose CRLF keep-alives stopped, RFC 5626 §4.4.1), counted from now."""
        conn = self._conns.get(cid)
        if conn is None:
            return
        conn.idle_timeout = idle
        if conn.watchdog is not None:
            conn.watchdog.move(min(conn.watchdog.at, asyncio.get_running_loop().time() + idle),
                               None)

    def send_on_connection(self, cid: int, data: bytes) -> bool:
        conn = self._conns.get(cid)
        return conn is not None and conn.write(data)

    def reusable(self, target: Target) -> Connection | None:
        """An open connection to ``target``: the dialog's own (``target.connection``: a phone
        without a TLS server can only be reached there; its identity was checked at accept),
        ours (same address and SNI) or, RFC 5923 style, an authenticated inbound one from that
        address presenting the expected identity whose peer named the target's port as its
        Via sent-by (the alias it would register). Several peers behind one address with one
        certificate identity stay apart that way."""
        if target.connection is not None:
            conn = self._conns.get(target.connection)
            if conn is not None and not conn.closed and conn.source.transport == target.transport:
                return conn
        conn = self._outbound.get(target.key)
        if conn is not None and not conn.closed:
            return conn
        if target.transport == "tls" and target.tls_identity:
            for c in self._conns.values():
                s = c.source
                if (not c.outbound and not c.closed and s.transport == "tls"
                        and s.ip == target.host and target.port in c.sent_by_ports
                        and identity_matches(target.tls_identity, s.tls_identities)
                        and (not target.tls_fingerprints
                             or fingerprint_matches(target.tls_fingerprints, s.tls_fingerprint))):
                    return c
        return None

    async def send_to(self, target: Target, data: bytes) -> Connection | None:
        """Deliver to a target, opening (and verifying) a connection when needed; returns the
        connection used (None for UDP)."""
        if target.transport == "udp":
            self.send_datagram(target.listener, data, (await self.locate(target))[0])
            return None
        conn = self.reusable(target) or await self.connect(target)
        if not conn.write(data):
            raise TransportFailure(f"connection to {target.host}:{target.port} is closed")
        return conn

    async def connect(self, target: Target) -> Connection:
        key = target.key
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._connecting[key] = fut
        try:
            conn = await self._open_any(target)
        except TransportFailure as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            self._connecting.pop(key, None)
        fut.set_result(conn)
        return conn

    async def _open_any(self, target: Target) -> Connection:
        """RFC 3263 §4.3: on a connect or TLS failure, the next located address."""
        addrs = await self.locate(target)
        for i, addr in enumerate(addrs):
            try:
                return await self._open(target, addr)
            except TransportFailure as exc:
                self.demote(target, addr)
                if i == len(addrs) - 1:
                    raise
                log.info("sip.failover", target=target.host, failed=f"{addr[0]}:{addr[1]}",
                         next=f"{addrs[i + 1][0]}:{addrs[i + 1][1]}", reason=str(exc))
        raise TransportFailure(f"nothing to connect to for {target.host}")

    async def _open(self, target: Target, addr: tuple[str, int]) -> Connection:
        cfg = self.config
        listener = self.listener_for(target.transport, target.listener)
        name = listener.name if listener else ""
        ip, port = addr
        where = MessageSource(target.transport, name, ip, port)
        ctx = self._client_ctx if target.transport == "tls" else None
        if target.transport == "tls" and ctx is None:
            raise TransportFailure("no TLS client context")
        sni = target.server_name or (None if _is_ip(target.host) else target.host)
        timeout = cfg.tls.handshake_timeout
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                ip, port, local_addr=self._source_addr(name)), timeout)
        except (OSError, TimeoutError, ValueError) as exc:  # ValueError: unusable host name
            if isinstance(exc, TimeoutError):
                reason = "connect timeout"
            elif isinstance(exc, OSError):
                reason = exc.strerror or type(exc).__name__
            else:
                reason = "invalid host name"
            raise TransportFailure(f"connect to {ip}:{port}: {reason}") from None
        stream: ByteStream = PlainStream(reader, writer)
        source = where
        if ctx is not None:
            try:
                tls = TlsStream(ctx, reader, writer, server_side=False, server_hostname=sni)
                await tls.handshake(timeout)
            except (OSError, TimeoutError, ValueError) as exc:  # ValueError: unusable SNI
                writer.close()
                self._outbound_tls_failed(where, _tls_reason(exc))
                raise TransportFailure(f"TLS to {ip}:{port}: "
                                       f"{_tls_reason(exc)}") from None
            stream = tls
            source = _with_peer_cert(where, tls)
            expected = target.tls_identity or ((sni,) if sni else ())
            if not identity_matches(expected, source.tls_identities):
                self._outbound_tls_failed(where, "identity mismatch",
                                          expected=",".join(expected),
                                          presented=",".join(source.tls_identities))
                writer.close()
                raise TransportFailure(f"{ip}:{port}: certificate identity "
                                       "does not match")
            if target.tls_fingerprints and not fingerprint_matches(target.tls_fingerprints,
                                                                   source.tls_fingerprint):
                self._outbound_tls_failed(where, "fingerprint mismatch")
                writer.close()
                raise TransportFailure(f"{ip}:{port}: certificate fingerprint "
                                       "is not pinned")
            self.counters["tls_handshakes"] += 1
        conn = self._register(source, stream, outbound=True)
        self._outbound[target.key] = conn
        self._spawn(self._read_loop(conn))
        if cfg.sip.keepalive_interval > 0:
            self._spawn(self._keepalive(conn))
        return conn

    async def _keepalive(self, conn: Connection) -> None:
        """RFC 5626 §3.5.1: CRLFCRLF pings on connections we opened."""
        interval = self.config.sip.keepalive_interval
        while not conn.closed:
            await asyncio.sleep(interval)
            if not conn.write(PING):
                return

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A read loop or keep-alive that raised is logged here, in the structured log (left
        alone, asyncio would print it as plain text when the task is collected)."""
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("sip.internal_error", where="connection task", exc_info=exc)


class _Deadline:
    """The one timer of a connection's read loop, moved lazily: activity only records the new
    deadline, and the timer re-arms itself when it fires early (``wait_for`` per read cost a
    task and a timer each). At the deadline it expires the loop's ``asyncio.timeout`` scope."""

    __slots__ = ("_armed", "_handle", "_loop", "_scope", "at", "header")

    def __init__(self, loop: asyncio.AbstractEventLoop, scope: asyncio.Timeout,
                 at: float) -> None:
        self._loop = loop
        self._scope = scope
        self.at = at
        self.header = False  # the deadline is the header (slow loris) one, not idleness
        self._armed = at
        self._handle = loop.call_at(at, self._fire)

    def move(self, at: float, header_deadline: float | None) -> None:
        self.at = at
        self.header = header_deadline is not None and header_deadline <= at
        if at < self._armed:  # earlier than the timer: re-arm now (later ones wait for it)
            self._handle.cancel()
            self._armed = at
            self._handle = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        if self._loop.time() >= self.at:
            self._scope.reschedule(self.at)
        else:
            self._armed = self.at
            self._handle = self._loop.call_at(self.at, self._fire)

    def cancel(self) -> None:
        self._handle.cancel()


def _peer(source: MessageSource) -> str:
    return f"{source.ip}:{source.port}"


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    """Cached: asked on every send about the same few peers (ip_address() costs ~2.5 µs)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__).lower()
    if isinstance(exc, TimeoutError):
        return "handshake timeout"
    if isinstance(exc, ValueError):
        return "invalid server name"
    return type(exc).__name__


def _certificate_failure(reason: str) -> bool:
    """Reasons that say the peer's certificate is wrong, as ``_tls_reason`` and ``_open`` spell
    them (OpenSSL: "certificate verify failed", "tlsv1 alert unknown ca", ...)."""
    return any(word in reason for word in ("certificate", "unknown ca", "mismatch"))


def _with_peer_cert(source: MessageSource, stream: ByteStream) -> MessageSource:
    der = stream.peer_certificate()
    if not der:
        return source
    return MessageSource(source.transport, source.listener, source.ip, source.port,
                         source.connection_id, cert_identities(der), cert_fingerprint(der))
