"""The Python side of the native media loop (``fastpath.c``): slots, sync, punts, counters.

``NativeLoop`` mirrors each ``LegStream`` into one C slot (its SRTP handles, latched and
destination addresses, outbound SSRC, and whether the C loop may decide for it) and each socket
into the fd table. ``poll`` runs the C loop over the relay's epoll set; the packets it punts come
back as ``(LegStream, length, address, rtcp_port, authenticated)`` after their bytes were copied
into the relay's shared ``PacketBuffer``, so the relay hands them to the same ``LegStream``
methods the Python path uses (which are the reference). Counters the C loop moved are deltas
that ``collect`` adds to the ``LegStream``s: before Python looks at a leg, at scrape time, and
when a session closes. Keys never pass through here: only libsrtp handles do.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

from pylibsrtp import _binding

from gateway.media.api import Address
from gateway.media.srtp import PacketBuffer
from gateway.media.stream import LegStream

try:
    from gateway.media._fastpath import ffi, lib  # type: ignore[import-not-found]
except ImportError as exc:  # not built (no C compiler at install time)
    ffi = lib = None
    UNAVAILABLE: str | None = f"native media loop not built: {exc}"
else:
    UNAVAILABLE = None

MAX_PUNTS = 256
_COUNTERS = ("packets_in", "bytes_in", "packets_out", "bytes_out", "drop_source", "drop_auth",
             "drop_replay", "drop_no_keys", "drop_no_remote", "drop_malformed", "drop_send_error",
             "drop_repeat_index")
_V4 = struct.Struct("=H2s4s8x")
_V6 = struct.Struct("=H2s4s16sI")


def _fn(name: str) -> Any:
    """The address of a function of the libsrtp in pylibsrtp, as the C loop's pointer type."""
    address = int(_binding.ffi.cast("uintptr_t", _binding.ffi.addressof(_binding.lib, name)))
    return ffi.cast("fp_srtp_fn", address)


def _handle(handle: Any) -> Any:
    if handle is None:
        return ffi.NULL
    return ffi.cast("void *", int(_binding.ffi.cast("uintptr_t", handle)))


def _sockaddr(addr: Address | tuple[Any, ...]) -> bytes:
    host, port = addr[0], addr[1]
    if ":" in host:
        flow = addr[2] if len(addr) > 2 else 0  # type: ignore[misc]
        scope = addr[3] if len(addr) > 3 else 0  # type: ignore[misc]
        return _V6.pack(socket.AF_INET6, port.to_bytes(2, "big"), flow.to_bytes(4, "big"),
                        socket.inet_pton(socket.AF_INET6, host), scope)
    return _V4.pack(socket.AF_INET, port.to_bytes(2, "big"), socket.inet_aton(host))


def _address(raw: bytes) -> tuple[Any, ...]:
    """A C sockaddr as the socket module reports it: (host, port) or IPv6's 4-tuple."""
    family = int.from_bytes(raw[:2], "little" if struct.pack("=H", 1)[0] else "big")
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6:
        _, _, flow, ip, scope = _V6.unpack(raw[:_V6.size])
        return (socket.inet_ntop(socket.AF_INET6, ip), port, int.from_bytes(flow, "big"), scope)
    return (socket.inet_ntoa(raw[4:8]), port)


class NativeLoop:
    """One relay's C slots and fd table; ``capacity`` legs at most (one slot per LegStream)."""

    def __init__(self, capacity: int) -> None:
        if lib is None:
            raise RuntimeError(UNAVAILABLE)
        self._engine = ffi.new("fp_engine *")
        self._slots = ffi.new("fp_slot[]", capacity)
        self._dirty = ffi.new("int32_t[]", capacity)
        self._punts = ffi.new("fp_punt[]", MAX_PUNTS)
        e = self._engine
        e.protect, e.unprotect = _fn("srtp_protect"), _fn("srtp_unprotect")
        e.slots, e.nslots, e.dirty = self._slots, capacity, self._dirty
        e.punts, e.max_punts = self._punts, MAX_PUNTS
        self._fd_tables(1024)
        self._eps: list[LegStream | None] = [None] * capacity
        self._index: dict[int, int] = {}  # id(LegStream) -> slot
        self._free = list(range(capacity - 1, -1, -1))

    def _fd_tables(self, size: int) -> None:
        e = self._engine
        fd_slot = ffi.new("int32_t[]", size)
        fd_rtcp = ffi.new("uint8_t[]", size)
        for i in range(size):
            fd_slot[i] = -1
        if e.nfds:
            ffi.memmove(fd_slot, e.fd_slot, e.nfds * 4)
            ffi.memmove(fd_rtcp, e.fd_rtcp, e.nfds)
        self._fd_slot, self._fd_rtcp = fd_slot, fd_rtcp  # keep them alive
        e.fd_slot, e.fd_rtcp, e.nfds = fd_slot, fd_rtcp, size

    # ------------------------------------------------------------------ legs and sockets

    def add(self, ep: LegStream) -> None:
        if not self._free:
            raise RuntimeError("native loop: no free slot")
        idx = self._free.pop()
        self._index[id(ep)] = idx
        self._eps[idx] = ep
        s = self._slots[idx]
        s.used = 1
        s.peer = idx

    def remove(self, ep: LegStream) -> None:
        idx = self._index.pop(id(ep))
        self._take(idx)
        self._eps[idx] = None
        ffi.memmove(ffi.addressof(self._slots, idx), bytes(ffi.sizeof("fp_slot")),
                    ffi.sizeof("fp_slot"))
        self._slots[idx].peer = idx
        self._free.append(idx)

    def watch(self, fd: int, ep: LegStream, rtcp_port: bool) -> None:
        if fd >= self._engine.nfds:
            self._fd_tables(max(fd + 1, self._engine.nfds * 2))
        self._fd_slot[fd] = self._index[id(ep)]
        self._fd_rtcp[fd] = rtcp_port
        if not rtcp_port:
            self._slots[self._fd_slot[fd]].fd = fd

    def unwatch(self, fd: int) -> None:
        if fd < self._engine.nfds:
            self._fd_slot[fd] = -1
            self._fd_rtcp[fd] = 0

    def sync(self, ep: LegStream) -> None:
        """Copy what the C loop decides on from ``ep`` into its slot (after any Python change)."""
        idx = self._index.get(id(ep))
        if idx is None:
            return
        s = self._slots[idx]
        peer = self._index.get(id(ep.peer))
        s.peer = idx if peer is None else peer
        alt = ep.rx_alt_handle is not None
        s.punt_all = alt or ep.peer is ep
        s.rx = ffi.NULL if alt else _handle(ep.rx_handle)
        s.tx = _handle(ep.tx_handle)
        s.secure = ep.secure
        latched = ep.latched_rtp
        # strict: the Python path would refuse any other source for sure (no nat_learning, the
        # signalled address latched); IPv6 4-tuples always go up to Python
        s.strict = (not ep.nat_learning and latched is not None and len(latched) == 2
                    and latched == ep.signalled_rtp)
        self._set_addr(ffi.addressof(s, "latched"), s, "latched_len", "has_latched", latched)
        self._set_addr(ffi.addressof(s, "dst"), s, "dst_len", "has_dst", ep.dst_rtp)
        s.has_tx_ssrc = len(ep.tx_ssrc) == 4
        if s.has_tx_ssrc:
            ffi.memmove(s.tx_ssrc, ep.tx_ssrc, 4)

    @staticmethod
    def _set_addr(target: Any, s: Any, length: str, flag: str, addr: Any) -> None:
        if addr is None:
            setattr(s, flag, 0)
            return
        raw = _sockaddr(addr)
        ffi.memmove(target, raw, len(raw))
        setattr(s, length, len(raw))
        setattr(s, flag, 1)

    # ------------------------------------------------------------------ counters

    def _take(self, idx: int) -> None:
        s = self._slots[idx]
        ep = self._eps[idx]
        if ep is not None:
            for name in _COUNTERS:
                value = getattr(s, name)
                if value:
                    setattr(ep, name, getattr(ep, name) + value)
            if s.has_failed:
                ep.failed_source = _address(bytes(ffi.buffer(ffi.addressof(s, "failed"),
                                                             s.failed_len)))
        for name in _COUNTERS:
            setattr(s, name, 0)
        s.has_failed = 0

    def collect(self) -> None:
        """Add every counter the C loop moved since the last collect to its LegStream."""
        e = self._engine
        dirty = self._dirty
        for i in range(e.ndirty):
            idx = dirty[i]
            self._slots[idx].dirty = 0
            self._take(idx)
        e.ndirty = 0

    # ------------------------------------------------------------------ the loop

    def poll(self, epfd: int, buf: PacketBuffer, rounds: int, again: int
             ) -> Iterator[tuple[LegStream, int, Any, bool, bool]]:
        """Run the C loop; yield each punted packet (its bytes now in ``buf``) in order. The
        caller handles each before the next is yielded; its legs are synced afterwards."""
        n = lib.fp_poll(self._engine, epfd, rounds, again)
        punts = self._punts
        for i in range(n):
            p = punts[i]
            ep = self._eps[p.slot]
            if ep is None:
                continue
            self._take(p.slot)
            length = p.len
            ffi.memmove(buf.cdata, p.data, length)
            addr = _address(bytes(ffi.buffer(ffi.addressof(p, "addr"), p.addr_len)))
            peer = ep.peer
            yield ep, length, addr, bool(p.rtcp_port), bool(p.authenticated)
            self.sync(ep)
            if peer is not ep:
                self.sync(peer)
