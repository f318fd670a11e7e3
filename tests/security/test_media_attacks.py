"""Media attacks against the real relay over loopback: injection, tampering, replay.

Nothing attacked may be forwarded, every attack is counted by the relay, and the counters fed
to the policy's SrtpWatch become a security event. Runs the relay directly (real sockets).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct

import pytest

from gateway.config import MediaSection
from gateway.media.api import LegConfig, generate_params
from gateway.media.relay import MediaRelay
from gateway.media.srtp import SrtpContext
from gateway.policy.events import attach_siem, detach_siem
from gateway.policy.media import SrtpWatch

SUITE = "AES_CM_128_HMAC_SHA1_80"


def rtp(seq: int, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + bytes([seq & 0xFF]) * 160


def udp(ip: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    s.setblocking(False)
    return s


async def drain(sock: socket.socket, wait: float = 0.3) -> list[bytes]:
    await asyncio.sleep(wait)
    got = []
    while True:
        try:
            got.append(sock.recv(2048))
        except BlockingIOError:
            return got


@pytest.fixture
async def relay():
    r = MediaRelay(MediaSection(address="127.0.0.1", port_min=42000, port_max=42999,
                                inactivity_timeout=30))
    yield r
    await r.close()


async def test_injection_tamper_replay_dropped_counted_reported(relay: MediaRelay) -> None:
    a, b, evil = udp(), udp(), udp("127.0.0.3")
    try:
        info = await relay.create_session()
        a_tx, a_rx = generate_params(SUITE), generate_params(SUITE)
        # leg 0: SRTP peer A (secure side); leg 1: plain RTP peer B (legacy side)
        await relay.update_leg(info.session_id, 0, 0, LegConfig(
            remote_rtp=a.getsockname(), rx=a_tx, tx=a_rx))
        await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.getsockname()))
        leg0 = info.local(0).rtp
        leg1 = info.local(1).rtp
        protect = SrtpContext(a_tx, outbound=True)

        good = protect.protect(rtp(1))
        a.sendto(good, leg0)
        assert len(await drain(b)) == 1  # the real path works

        # unsignalled source injection: plain RTP on the plain leg, SRTP under a guessed key on
        # the SRTP leg (the attacker does not know A's key; one that does is A, RFC 3711 §9)
        forged = SrtpContext(generate_params(SUITE), outbound=True)
        for seq in range(2, 12):
            evil.sendto(rtp(seq), leg1)
            evil.sendto(forged.protect(rtp(seq + 100)), leg0)
        # tampered SRTP from the right address
        for seq in range(200, 220):
            bad = bytearray(protect.protect(rtp(seq)))
            bad[20] ^= 0x40
            a.sendto(bytes(bad), leg0)
        # replayed SRTP from the right address
        for _ in range(40):
            a.sendto(good, leg0)
        assert await drain(b) == []
        assert await drain(a, 0.0) == []

        stats = await relay.stats(info.session_id)
        s0, s1 = stats.legs[0][0], stats.legs[1][0]
        assert s0.auth_failures == 30 and s0.replays == 40
        assert s1.drops.get("source", 0) == 10
        assert s0.latched_rtp == a.getsockname()
        assert stats.legs[1][0].packets_out == 1

        buf = io.StringIO()
        h = attach_siem(stream=buf)
        try:
            watch = SrtpWatch(threshold=50)
            assert watch.report("call-1", "0", "carrier", s0.auth_failures, s0.replays,
                                source=f"{s0.latched_rtp}")
        finally:
            detach_siem(h)
        doc = json.loads(buf.getvalue())
        assert doc["kind"] == "srtp.auth_failures" and doc["replays"] == 40
        assert a_tx.key.hex() not in buf.getvalue()
    finally:
        for s in (a, b, evil):
            s.close()
