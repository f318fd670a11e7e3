"""``RtpEndpoint``: a test phone's media side, plain RTP or SRTP with keys of its own.

It sends real RTP (PCMU by default, 20 ms packets, incrementing sequence numbers and timestamps,
a random SSRC), receives and decrypts, and keeps counters a test can assert on. It can switch
SSRC and keys mid-stream to provoke the relay's ROC/re-key handling. RTCP is multiplexed on the
same socket when ``rtcp_mux`` (the default) and otherwise goes to a second socket on port + 1.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pylibsrtp

from tests.support.sdes import SdesKey
from tests.support.tone import FRAME, tone_frames

Address = tuple[str, int]
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True)
class RtpPacket:
    """One received (and, for SRTP, decrypted) RTP packet."""

    seq: int
    timestamp: int
    ssrc: int
    payload_type: int
    marker: bool
    payload: bytes
    source: Address
    arrival: float


def parse_rtp(data: bytes, source: Address, arrival: float) -> RtpPacket | None:
    """A minimal RTP header reader (fixed header, CSRCs and one extension skipped)."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < offset + 4:
            return None
        offset += 4 + 4 * struct.unpack_from("!H", data, offset + 2)[0]
    end = len(data)
    if b0 & 0x20 and end > offset:
        end -= data[-1]
    if end < offset:
        return None
    return RtpPacket(seq, ts, ssrc, b1 & 0x7F, bool(b1 & 0x80), data[offset:end], source,
                     arrival)


_PATTERN_MAGIC = b"SRTPGW"


def pattern_payload(index: int, size: int = FRAME) -> bytes:
    """A recognisable payload: magic, the packet index, then bytes derived from the index.
    Pass ``pattern_payload`` as ``send_stream(payload=...)`` and check with
    ``RtpEndpoint.pattern_indices``: loss, reordering and corruption all show."""
    head = _PATTERN_MAGIC + struct.pack("!I", index)
    return head + bytes((index + i) & 0xFF for i in range(size - len(head)))


def pattern_index(payload: bytes) -> int | None:
    """The index carried by an intact ``pattern_payload``, else None."""
    if not payload.startswith(_PATTERN_MAGIC) or len(payload) < 10:
        return None
    index = struct.unpack_from("!I", payload, 6)[0]
    return index if payload == pattern_payload(index, len(payload)) else None


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTP payload types 64-95 collide with RTCP packet types 192-223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)


class RtpEndpoint:
    """One RTP/SRTP stream endpoint bound on loopback.

    Typical use::

        ep = await RtpEndpoint.open()
        ep.set_remote(("127.0.0.1", 40000))
        ep.set_keys(tx=SdesKey.generate(), rx=peer_key)   # omit for plain RTP
        await ep.send_stream(50)                           # 1 s of 1 kHz tone
        await ep.wait_for_packets(50, timeout=5)
    """

    def __init__(self, host: str, rtcp_mux: bool) -> None:
        self.host = host
        self.rtcp_mux = rtcp_mux
        self.remote: Address | None = None
        self.remote_rtcp: Address | None = None
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.seq = int.from_bytes(os.urandom(2), "big")
        self.timestamp = int.from_bytes(os.urandom(4), "big")
        self.payload_type = 0
        self.tx_key: SdesKey | None = None
        self.rx_key: SdesKey | None = None
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        self._frames: Iterator[bytes] = tone_frames(1000.0)
        self.received: list[RtpPacket] = []
        self.rtcp_received: list[tuple[bytes, Address]] = []
        self.sent = 0
        self.rtcp_sent = 0
        self.auth_failures = 0
        self.replays = 0
        self.undecodable = 0
        # SRTCP packets that failed to unprotect; baresip, for one, sends a plain 16-byte RTCP
        # APP "PINGPONG" before its first SRTCP packet, so tests assert on RTP counters.
        self.rtcp_failures = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self._arrived = asyncio.Event()

    @classmethod
    async def open(cls, host: str = "127.0.0.1", port: int = 0, *, rtcp_mux: bool = True
                   ) -> RtpEndpoint:
        """Bind the RTP socket (and an RTCP socket on port + 1 when not muxed)."""
        loop = asyncio.get_running_loop()
        ep = cls(host, rtcp_mux)
        for _ in range(50):
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(ep._on_rtp), local_addr=(host, port))
            ep._transport = transport
            if rtcp_mux:
                return ep
            rtp_port = transport.get_extra_info("sockname")[1]
            try:
                ep._rtcp_transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(ep._on_rtcp), local_addr=(host, rtp_port + 1))
                return ep
            except OSError:
                transport.close()
                if port:
                    raise
        raise OSError("could not bind an RTP/RTCP port pair")

    # ------------------------------------------------------------------ configuration

    @property
    def addr(self) -> Address:
        assert self._transport is not None
        return self._transport.get_extra_info("sockname")[:2]

    @property
    def port(self) -> int:
        return self.addr[1]

    @property
    def rtcp_addr(self) -> Address:
        if self.rtcp_mux or self._rtcp_transport is None:
            return self.addr
        return self._rtcp_transport.get_extra_info("sockname")[:2]

    def set_remote(self, addr: Address | None, rtcp: Address | None = None) -> None:
        """Where to send RTP (and RTCP: ``rtcp``, else the RTP address if muxed, else port+1)."""
        self.remote = addr
        if addr is None:
            self.remote_rtcp = None
        else:
            self.remote_rtcp = rtcp or (addr if self.rtcp_mux else (addr[0], addr[1] + 1))

    def set_keys(self, tx: SdesKey | None = None, rx: SdesKey | None = None) -> None:
        """Install new keys (None = plain in that direction). A fresh SRTP session starts with
        ROC 0, exactly like a peer that re-keys on a re-INVITE."""
        self.tx_key, self.rx_key = tx, rx
        self._tx = self._session(tx, pylibsrtp.Policy.SSRC_ANY_OUTBOUND) if tx else None
        self._rx = self._session(rx, pylibsrtp.Policy.SSRC_ANY_INBOUND) if rx else None

    @staticmethod
    def _session(key: SdesKey, direction: int) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(key=key.key, ssrc_type=direction, srtp_profile=key.profile)
        policy.allow_repeat_tx = True
        return pylibsrtp.Session(policy)

    def change_ssrc(self, ssrc: int | None = None) -> int:
        """Start a new RTP source (new SSRC, new random sequence start)."""
        self.ssrc = ssrc if ssrc is not None else int.from_bytes(os.urandom(4), "big")
        self.seq = int.from_bytes(os.urandom(2), "big")
        return self.ssrc

    def set_tone(self, freq: float) -> None:
        """Default payload: 20 ms PCMU frames of this tone (1 kHz unless changed)."""
        self._frames = tone_frames(freq)

    # ------------------------------------------------------------------ sending

    def build_packet(self, payload: bytes, marker: bool = False) -> bytes:
        """The next RTP packet (plain) and advance sequence number and timestamp."""
        header = _HEADER.pack(0x80, (0x80 if marker else 0) | self.payload_type, self.seq,
                              self.timestamp, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME) & 0xFFFFFFFF
        return header + payload

    def send(self, payload: bytes | None = None, marker: bool = False) -> bytes:
        """Send one packet now; returns what went on the wire (SRTP-protected if keyed)."""
        if self.remote is None or self._transport is None:
            raise RuntimeError("set_remote() first")
        packet = self.build_packet(payload if payload is not None else next(self._frames),
                                   marker)
        wire = self._tx.protect(packet) if self._tx is not None else packet
        self._transport.sendto(wire, self.remote)
        self.sent += 1
        return wire

    def send_raw(self, data: bytes, addr: Address | None = None) -> None:
        """Send arbitrary bytes from the RTP socket (attack and malformed-packet tests)."""
        assert self._transport is not None
        target = addr or self.remote
        assert target is not None
        self._transport.sendto(data, target)

    async def send_stream(self, count: int, interval: float = 0.02,
                          payload: Callable[[int], bytes] | None = None) -> None:
        """Send ``count`` packets paced at ``interval`` (real time, drift-free)."""
        start = time.monotonic()
        for i in range(count):
            self.send(payload(i) if payload is not None else None, marker=(i == 0))
            delay = start + (i + 1) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def send_rtcp(self) -> bytes:
        """Send a minimal RTCP sender report (SRTCP if keyed) to the RTCP address."""
        if self.remote_rtcp is None:
            raise RuntimeError("set_remote() first")
        ntp = int((time.time() + 2208988800) * 65536) << 16
        sr = struct.pack("!BBHIQIII", 0x80, 200, 6, self.ssrc, ntp, self.timestamp, self.sent,
                         self.sent * 160)
        wire = self._tx.protect_rtcp(sr) if self._tx is not None else sr
        transport = self._transport if self.rtcp_mux else self._rtcp_transport
        assert transport is not None
        transport.sendto(wire, self.remote_rtcp)
        self.rtcp_sent += 1
        return wire

    # ------------------------------------------------------------------ receiving

    def _on_rtp(self, data: bytes, addr: Address) -> None:
        if is_rtcp(data):
            self._on_rtcp(data, addr)
            return
        if self._rx is not None:
            try:
                data = self._rx.unprotect(data)
            except pylibsrtp.Error as exc:
                if "replay" in str(exc):
                    self.replays += 1
                elif "auth" in str(exc):
                    self.auth_failures += 1
                else:
                    self.undecodable += 1
                return
        packet = parse_rtp(data, addr, time.monotonic())
        if packet is None:
            self.undecodable += 1
            return
        self.received.append(packet)
        self._arrived.set()

    def _on_rtcp(self, data: bytes, addr: Address) -> None:
        if self._rx is not None:
            try:
                data = self._rx.unprotect_rtcp(data)
            except pylibsrtp.Error:
                self.rtcp_failures += 1
                return
        self.rtcp_received.append((data, addr))
        self._arrived.set()

    async def wait_for_packets(self, count: int, timeout: float = 5.0) -> list[RtpPacket]:
        """Wait until ``count`` RTP packets have arrived in total; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    async def wait_for_rtcp(self, count: int = 1, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.rtcp_received) < count:
                self._arrived.clear()
                await self._arrived.wait()

    def pattern_indices(self) -> list[int | None]:
        """Indices of received ``pattern_payload`` packets in arrival order (None = corrupt)."""
        return [pattern_index(p.payload) for p in self.received]

    def payloads(self, ssrc: int | None = None) -> list[bytes]:
        return [p.payload for p in self.received if ssrc is None or p.ssrc == ssrc]

    def clear(self) -> None:
        self.received.clear()
        self.rtcp_received.clear()

    def close(self) -> None:
        for t in (self._transport, self._rtcp_transport):
            if t is not None:
                t.close()
