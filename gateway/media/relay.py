"""The in-process media relay: sockets, readers and the inactivity timer around LegStream.

Each leg's stream owns a non-blocking UDP socket (two without rtcp-mux). All of them sit in one
epoll set, and only that epoll descriptor is registered with the event loop: one wakeup polls the
set and reads one packet from every ready socket with ``recvfrom_into`` into a single shared
buffer, then polls again while packets keep coming, so a busy relay pays one loop wakeup and one
``epoll_wait`` for many packets on many sockets (and no EAGAIN read per packet: the set is
level-triggered). The packet is checked and re-protected in place by ``LegStream`` and sent from
the peer leg's socket. RFC 7983 demultiplexing: first byte
128..191 is RTP/RTCP (RTCP when the payload type byte is 192..223, RFC 5761), 20..63 is DTLS and
goes to the handler the DTLS layer attached for that port: without rtcp-mux the RTCP port has its
own handler (RFC 5764 §4.1: a second DTLS association there). Run it on uvloop.

That is the Python engine, the reference. With ``[media] engine = "native"`` (the default when
the extension is built) the same epoll set is drained by the C loop of ``gateway.media.native``,
which relays the steady state itself and punts everything else, in order, to ``_handle``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import itertools
import os
import select
import socket
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config import MediaSection
from gateway.media import native
from gateway.media.api import (
    Address,
    DtlsHandler,
    InvalidParams,
    LegConfig,
    LocalStream,
    MediaError,
    PortsExhausted,
    RelayTotals,
    SessionInfo,
    SessionStats,
    SrtpParams,
    TimeoutHandler,
    UnknownSession,
)
from gateway.media.ports import PortPool
from gateway.media.srtp import MAX_PACKET, PacketBuffer
from gateway.media.stream import LegStream
from gateway.ops.log import get_logger

log = get_logger("media")

POLL_ROUNDS = 8     # epoll rounds per loop wakeup before yielding to other loop work
POLL_EVENTS = 1024  # ready sockets taken per round
POLL_AGAIN = 16     # poll again at once only after a batch at least this large
_NO_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out")
_UNSPECIFIED = ("0.0.0.0", "::")  # canonical text, as _canonical_ip writes them
_DROPS = ("source", "auth", "replay", "plain_rtcp", "no_keys", "no_remote", "malformed",
          "send_error", "repeat_index")


@dataclass(slots=True)
class _Session:
    session_id: str
    legs: tuple[list[LegStream], list[LegStream]]
    sockets: list[socket.socket] = field(default_factory=list)
    rtp_sockets: dict[int, socket.socket] = field(default_factory=dict)   # by leg port
    rtcp_sockets: dict[int, socket.socket] = field(default_factory=dict)  # by leg port
    timeout: float = 60.0
    activity: list[tuple[int, int]] = field(default_factory=list)
    idle_since: list[float] = field(default_factory=list)
    reported: list[bool] = field(default_factory=list)
    send_failed: set[int] = field(default_factory=set)   # legs whose raw send failure was logged


class MediaRelay:
    """Relays media between the two legs of each session; see ``gateway.media.api``.

    ``on_timeout(session_id, stream)`` is called once when a stream has carried no valid packet
    on either leg for the session's inactivity timeout (again only after media resumed).
    """

    def __init__(self, media: MediaSection, *, on_timeout: TimeoutHandler | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._address = media.address
        self._sdp_address = media.sdp_address
        self._family = socket.AF_INET6 if ":" in media.address else socket.AF_INET
        self._pool = PortPool(media.port_min, media.port_max)
        self._timeout = media.inactivity_timeout
        self._relatch_after = media.nat_relatch_after
        self._on_timeout = on_timeout
        self._sessions: dict[str, _Session] = {}
        self._ids = itertools.count(1)
        self._prefix = os.urandom(4).hex()
        self._buf = PacketBuffer()
        self._created = 0
        self._timeouts = 0
        self._closed_totals = dict.fromkeys((*_COUNTERS, *_DROPS), 0)
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._epoll = select.epoll()
        self._slots: dict[int, tuple[LegStream, Any, bool]] = {}
        self._native: native.NativeLoop | None = None
        if media.engine == "native":
            if native.UNAVAILABLE is None:
                # a slot per leg: each port pair of the range serves one leg
                self._native = native.NativeLoop(self._pool.size + 1)
            else:
                log.warning("media.engine_fallback", engine="python", reason=native.UNAVAILABLE)
        self.engine = "native" if self._native is not None else "python"
        self._loop.add_reader(self._epoll.fileno(),
                              self._on_events if self._native is None else self._on_native)

    def _watch(self, ep: LegStream, sock: socket.socket, rtcp_port: bool) -> None:
        fd = sock.fileno()
        self._slots[fd] = (ep, sock.recvfrom_into, rtcp_port)
        if self._native is not None:
            self._native.watch(fd, ep, rtcp_port)
        self._epoll.register(fd, select.EPOLLIN)

    def _sync(self, ep: LegStream) -> None:
        if self._native is not None:
            self._native.sync(ep)

    def _collect(self) -> None:
        if self._native is not None:
            self._native.collect()

    # ------------------------------------------------------------------ sessions

    async def create_session(self, streams: int = 1,
                             rtcp_mux: tuple[bool, bool] = (True, True),
                             timeout: float | None = None) -> SessionInfo:
        return self.create_session_now(streams, rtcp_mux, timeout)

    def create_session_now(self, streams: int = 1, rtcp_mux: tuple[bool, bool] = (True, True),
                           timeout: float | None = None) -> SessionInfo:
        """Synchronous create_session, for callers that are not coroutines."""
        if self._closed:
            raise MediaError("relay is closed")
        if not 1 <= streams <= 16:
            raise InvalidParams(f"streams must be 1..16, got {streams}")
        if timeout is not None and not 0 < timeout <= 86400:
            raise InvalidParams(f"timeout must be 0..86400 s, got {timeout}")
        session_id = f"{self._prefix}-{next(self._ids)}"
        sess = _Session(session_id, ([], []), timeout=timeout or self._timeout)
        now = self._loop.time()
        try:
            for _ in range(streams):
                pair = []
                for leg in (0, 1):
                    ep = self._open_leg(sess, rtcp_mux[leg])
                    sess.legs[leg].append(ep)
                    pair.append(ep)
                pair[0].peer, pair[1].peer = pair[1], pair[0]
                self._sync(pair[0])
                self._sync(pair[1])
                sess.activity.append((0, 0))
                sess.idle_since.append(now)
                sess.reported.append(False)
        except BaseException:
            self._release(sess)
            raise
        self._sessions[session_id] = sess
        self._created += 1
        self._arm_timer()
        log.debug("media.session_created", session=session_id, streams=streams,
                  rtcp_mux=f"{rtcp_mux[0]},{rtcp_mux[1]}")
        legs = tuple(tuple(self._local(ep) for ep in sess.legs[leg]) for leg in (0, 1))
        return SessionInfo(session_id, (legs[0], legs[1]))

    def _local(self, ep: LegStream) -> LocalStream:
        rtp = (self._sdp_address, ep.port)
        return LocalStream(rtp, rtp if ep.rtcp_mux else (self._sdp_address, ep.port + 1))

    def _open_leg(self, sess: _Session, rtcp_mux: bool) -> LegStream:
        for _ in range(self._pool.size):
            port = self._pool.acquire()
            if port is None:
                break
            try:
                rtp = self._bind(port)
            except OSError as exc:
                self._unbindable(port, exc)
                continue
            rtcp = None
            if not rtcp_mux:
                try:
                    rtcp = self._bind(port + 1)
                except OSError as exc:
                    rtp.close()
                    self._unbindable(port, exc)
                    continue
            ep = LegStream(port, rtcp_mux)
            ep.clock = self._loop.time
            ep.relatch_after = self._relatch_after
            if self._native is not None:
                self._native.add(ep)
            self._attach(sess, ep, rtp, rtcp)
            return ep
        log.warning("media.ports_exhausted", free=len(self._pool), size=self._pool.size)
        raise PortsExhausted(f"no free media port pair in {self._pool.size} pairs")

    def _unbindable(self, port: int, exc: OSError) -> None:
        """A port another process holds goes last in the pool; running out of descriptors is
        no fault of the port: give it back and refuse now, saying why (not "ports exhausted"
        after trying every port of the range)."""
        if exc.errno in _NO_DESCRIPTORS:
            self._pool.release(port)
            log.warning("media.sockets_exhausted", error=exc.strerror or str(exc))
            raise PortsExhausted(f"cannot open a media socket: {exc.strerror}") from None
        self._pool.busy(port)

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self._address, port))
        except OSError:
            sock.close()
            raise
        return sock

    def _attach(self, sess: _Session, ep: LegStream, rtp: socket.socket,
                rtcp: socket.socket | None) -> None:
        sess.sockets.append(rtp)
        sess.rtp_sockets[ep.port] = rtp
        ep.send_rtp = ep.send_rtcp = rtp.sendto
        self._watch(ep, rtp, False)
        if rtcp is not None:
            sess.sockets.append(rtcp)
            sess.rtcp_sockets[ep.port] = rtcp
            ep.send_rtcp = rtcp.sendto
            self._watch(ep, rtcp, True)

    def _rtcp_sender(self, sess: _Session, ep: LegStream, mux: bool) -> None:
        """RTCP leaves from the RTP port with rtcp-mux, else from the reserved odd port (bound
        now if the leg was created muxed and the answer refused mux)."""
        rtcp = sess.rtcp_sockets.get(ep.port) if mux else self._rtcp_socket(sess, ep)
        ep.send_rtcp = (rtcp if rtcp is not None and not mux
                        else sess.rtp_sockets[ep.port]).sendto

    def _rtcp_socket(self, sess: _Session, ep: LegStream) -> socket.socket | None:
        """The leg's separate RTCP socket, bound on first need (None if the port is taken)."""
        rtcp = sess.rtcp_sockets.get(ep.port)
        if rtcp is None:
            try:
                rtcp = self._bind(ep.port + 1)
            except OSError as exc:
                log.warning("media.rtcp_port_unavailable", port=ep.port + 1, error=str(exc))
                return None
            sess.sockets.append(rtcp)
            sess.rtcp_sockets[ep.port] = rtcp
            self._watch(ep, rtcp, True)
        return rtcp

    async def update_leg(self, session_id: str, leg: int, stream: int, cfg: LegConfig) -> None:
        self.update_leg_now(session_id, leg, stream, cfg)

    def update_leg_now(self, session_id: str, leg: int, stream: int, cfg: LegConfig) -> None:
        sess, ep = self._find(session_id, leg, stream)
        cfg = replace(cfg, remote_rtp=_remote(cfg.remote_rtp), remote_rtcp=_remote(cfg.remote_rtcp))
        self._rtcp_sender(sess, ep, cfg.rtcp_mux)
        self._collect()  # the C loop's counters are the leg's before its state changes
        ep.configure(cfg)
        self._sync(ep)

    async def add_rx(self, session_id: str, leg: int, stream: int, params: SrtpParams) -> None:
        ep = self._find(session_id, leg, stream)[1]
        ep.add_rx(params)
        self._sync(ep)

    async def drop_rx(self, session_id: str, leg: int, stream: int) -> None:
        ep = self._find(session_id, leg, stream)[1]
        ep.drop_rx()
        self._sync(ep)

    async def stats(self, session_id: str) -> SessionStats:
        return self.stats_now(session_id)

    def stats_now(self, session_id: str) -> SessionStats:
        sess = self._sessions.get(session_id)
        if sess is None:
            raise UnknownSession(session_id)
        self._collect()
        legs = tuple(tuple(ep.stats() for ep in sess.legs[leg]) for leg in (0, 1))
        return SessionStats(session_id, (legs[0], legs[1]))

    async def close_session(self, session_id: str) -> None:
        self.close_session_now(session_id)

    def close_session_now(self, session_id: str) -> None:
        sess = self._sessions.pop(session_id, None)
        if sess is not None:
            self._release(sess)
            log.debug("media.session_closed", session=session_id)

    def _release(self, sess: _Session) -> None:
        totals = self._closed_totals
        self._collect()
        for sock in sess.sockets:
            if self._native is not None:
                self._native.unwatch(sock.fileno())
        for leg in sess.legs:
            for ep in leg:
                if self._native is not None:
                    self._native.remove(ep)
                for name in _COUNTERS:
                    totals[name] += getattr(ep, name)
                for name in _DROPS:
                    totals[name] += getattr(ep, "drop_" + name)
                ep.close()
                self._pool.release(ep.port)
        for sock in sess.sockets:
            fd = sock.fileno()
            self._slots.pop(fd, None)
            self._epoll.unregister(fd)
            sock.close()
        sess.sockets.clear()
        sess.rtp_sockets.clear()
        sess.rtcp_sockets.clear()

    def session_ids(self) -> list[str]:
        return list(self._sessions)

    def totals(self) -> RelayTotals:
        self._collect()
        t = dict(self._closed_totals)
        for sess in self._sessions.values():
            for leg in sess.legs:
                for ep in leg:
                    for name in _COUNTERS:
                        t[name] += getattr(ep, name)
                    for name in _DROPS:
                        t[name] += getattr(ep, "drop_" + name)
        return RelayTotals(
            sessions_active=len(self._sessions), sessions_created=self._created,
            ports_free=len(self._pool), packets_in=t["packets_in"], bytes_in=t["bytes_in"],
            packets_out=t["packets_out"], bytes_out=t["bytes_out"], auth_failures=t["auth"],
            replays=t["replay"], drops={name: t[name] for name in _DROPS},
            timeouts=self._timeouts)

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        self._closed = True
        for session_id in list(self._sessions):
            self.close_session_now(session_id)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._epoll.closed:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()

    # ------------------------------------------------------------------ DTLS hook

    def set_dtls_handler(self, session_id: str, leg: int, stream: int,
                         handler: DtlsHandler | None, rtcp: bool = False) -> None:
        ep = self._find(session_id, leg, stream)[1]
        if rtcp:
            ep.dtls_rtcp_handler = handler
        else:
            ep.dtls_handler = handler

    def send_raw(self, session_id: str, leg: int, stream: int, data: bytes,
                 addr: Address, rtcp: bool = False) -> None:
        sess, ep = self._find(session_id, leg, stream)
        if ep.send_rtp is None:
            raise UnknownSession(session_id)
        send = ep.send_rtp
        if rtcp:
            sock = self._rtcp_socket(sess, ep)
            if sock is None:
                raise InvalidParams(f"leg {leg} stream {stream}: RTCP port {ep.port + 1} taken")
            send = sock.sendto
        addr = _check_address(addr)
        try:
            send(data, addr)
        except OSError as exc:
            if leg not in sess.send_failed:   # once per leg: DTLS retransmits would repeat it
                sess.send_failed.add(leg)
                log.warning("media.send_raw_failed", session=session_id, leg=leg, stream=stream,
                            destination=f"{addr[0]}:{addr[1]}", error=str(exc))

    # ------------------------------------------------------------------ hot path

    def _on_events(self) -> None:
        """The Python path: one recvfrom_into per ready socket per epoll round."""
        data = self._buf.data
        slots = self._slots
        poll = self._epoll.poll
        handle = self._handle
        for _ in range(POLL_ROUNDS):
            events = poll(0, POLL_EVENTS)
            for fd, _ev in events:
                slot = slots.get(fd)
                if slot is None:
                    continue
                ep, recv, rtcp_port = slot
                try:
                    n, addr = recv(data, MAX_PACKET + 1)  # one more byte: oversize shows
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    ep.drop_malformed += 1
                    continue
                handle(ep, n, addr, rtcp_port, False)
            if len(events) < POLL_AGAIN:
                return  # a small batch: the loop will wake us when more arrive

    def _on_native(self) -> None:
        """The native path: the C loop drains the set; what it punts is handled as above."""
        assert self._native is not None
        handle = self._handle
        for ep, n, addr, rtcp_port, authenticated in self._native.poll(
                self._epoll.fileno(), self._buf, POLL_ROUNDS, POLL_AGAIN):
            handle(ep, n, addr, rtcp_port, authenticated)

    def _handle(self, ep: LegStream, n: int, addr: Any, rtcp_port: bool,
                authenticated: bool) -> None:
        """One received datagram (in the shared buffer): RFC 7983 demultiplexing, relay, send.

        ``authenticated``: the native loop already unprotected it with the leg's context.
        """
        buf = self._buf
        data = buf.data
        first = data[0]
        if authenticated:
            m = ep.rtp_authenticated(buf, n, addr)
            if m:
                self._send(ep, m, False)
        elif 127 < first < 192 and 8 <= n <= MAX_PACKET:
            if rtcp_port or (191 < data[1] < 224):
                m = ep.rtcp_in(buf, n, addr)
                if m:
                    self._send(ep, m, True)
            elif n >= 12:
                m = ep.rtp_in(buf, n, addr)
                if m:
                    self._send(ep, m, False)
            else:
                ep.drop_malformed += 1
        elif 19 < first < 64:
            handler = ep.dtls_rtcp_handler if rtcp_port else ep.dtls_handler
            if handler is not None:
                handler(bytes(buf.view[:n]), addr)
            else:
                ep.drop_malformed += 1
        else:
            ep.drop_malformed += 1

    def _send(self, ep: LegStream, m: int, rtcp: bool) -> None:
        peer = ep.peer
        try:
            if rtcp:
                peer.send_rtcp(self._buf.view[:m], peer.dst_rtcp)  # type: ignore[misc]
            else:
                peer.send_rtp(self._buf.view[:m], peer.dst_rtp)  # type: ignore[misc]
        except OSError:
            peer.packets_out -= 1
            ep.drop_send_error += 1

    # ------------------------------------------------------------------ inactivity

    def _arm_timer(self) -> None:
        if self._timer is None and not self._closed:
            interval = max(0.05, min(1.0, min((s.timeout for s in self._sessions.values()),
                                               default=self._timeout) / 4))
            self._timer = self._loop.call_later(interval, self._check_activity)

    def _check_activity(self) -> None:
        self._timer = None
        self._collect()
        now = self._loop.time()
        expired: list[tuple[str, int]] = []
        for sess in self._sessions.values():
            for s, (a, b) in enumerate(zip(sess.legs[0], sess.legs[1], strict=True)):
                count = (a.packets_in, b.packets_in)
                before = sess.activity[s]
                if count != before:
                    if count[0] != before[0]:
                        a.last_packet = now
                    if count[1] != before[1]:
                        b.last_packet = now
                    sess.activity[s] = count
                    sess.idle_since[s] = now
                    sess.reported[s] = False
                elif not sess.reported[s] and now - sess.idle_since[s] >= sess.timeout:
                    sess.reported[s] = True
                    expired.append((sess.session_id, s))
        for session_id, s in expired:
            self._timeouts += 1
            log.info("media.timeout", session=session_id, stream=s)
            if self._on_timeout is not None:
                try:
                    self._on_timeout(session_id, s)
                except Exception as exc:  # the call layer's bug must not stop the timer
                    log.error("media.timeout_handler_failed", error=repr(exc))
        if self._sessions:
            self._arm_timer()

    # ------------------------------------------------------------------ helpers

    def _find(self, session_id: str, leg: int, stream: int) -> tuple[_Session, LegStream]:
        sess = self._sessions.get(session_id)
        if sess is None:
            raise UnknownSession(session_id)
        if leg not in (0, 1) or not 0 <= stream < len(sess.legs[0]):
            raise InvalidParams(f"no leg {leg} stream {stream} in session {session_id}")
        return sess, sess.legs[leg][stream]


@functools.lru_cache(maxsize=1024)
def _canonical_ip(host: str) -> str:
    """Canonical text of an IP literal, or ValueError. Cached because every leg update checks
    the same few peer addresses again (bounded: peers choose what goes in)."""
    return str(ipaddress.ip_address(host))


def _check_address(addr: Address) -> Address:
    """The address with its IP in canonical text (as recvfrom reports it), or InvalidParams."""
    try:
        host, port = addr
        ip = _canonical_ip(host)
    except (ValueError, TypeError):
        raise InvalidParams(f"not an IP address and port: {addr!r}") from None
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise InvalidParams(f"port out of range in {addr!r}")
    return (ip, port)


def _remote(addr: Address | None) -> Address | None:
    """A signalled remote; c=0.0.0.0 (old-style hold) or port 0 means "send nothing"."""
    if addr is None:
        return None
    addr = _check_address(addr)
    return None if addr[1] == 0 or addr[0] in _UNSPECIFIED else addr

