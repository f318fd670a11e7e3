"""The media relay on real loopback sockets (uvloop): modes, latching, RTCP, DTLS demux, timeouts,
ports, and cleanup after many sessions."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
import struct

import pytest
import uvloop

from gateway.config import MediaSection
from gateway.media.api import (
    SUITE_KEY_LENGTHS,
    LegConfig,
    PortsExhausted,
    UnknownSession,
    generate_params,
)
from gateway.media.relay import MediaRelay
from gateway.media.srtp import SrtpContext, carry_roc

# The relay runs on uvloop in production; pytest-asyncio 1.x still honours this override.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


def free_range(size: int) -> tuple[int, int]:
    """A port range that is free right now (the kernel's pick, widened upwards)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    base = min(base, 65535 - size - 2) & ~1
    return base, base + size - 1


def media(size: int = 200, timeout: float = 60.0) -> MediaSection:
    lo, hi = free_range(size)
    return MediaSection(address="127.0.0.1", port_min=lo, port_max=hi, inactivity_timeout=timeout)


def rtp(seq: int, ssrc: int = 0x1234, payload: bytes = b"\xaa" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + payload


def rtcp_rr(ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


class Peer(asyncio.DatagramProtocol):
    """A UDP endpoint on loopback that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> Peer:
        loop = asyncio.get_running_loop()
        _, peer = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        return peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def recv(self, timeout: float = 2.0) -> bytes:
        return (await asyncio.wait_for(self.queue.get(), timeout))[0]

    async def nothing(self, wait: float = 0.2) -> bool:
        await asyncio.sleep(wait)
        return self.queue.empty()

    def close(self) -> None:
        assert self.transport is not None
        self.transport.close()


@pytest.fixture
async def relay():
    r = MediaRelay(media())
    yield r
    await r.close()


@pytest.mark.parametrize("suite", sorted(SUITE_KEY_LENGTHS))
async def test_rtp_to_srtp_both_directions(relay: MediaRelay, suite: str) -> None:
    a, b = await Peer.open(), await Peer.open()
    info = await relay.create_session()
    b_key, relay_key = generate_params(suite), generate_params(suite)
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0,
                           LegConfig(remote_rtp=b.addr, rx=b_key, tx=relay_key))
    b_rx, b_tx = SrtpContext(relay_key, outbound=False), SrtpContext(b_key, outbound=True)
    for seq in range(20):
        a.send(rtp(seq), info.local(0).rtp)
        got = await b.recv()
        assert got != rtp(seq) and b_rx.unprotect(got) == rtp(seq)
        b.send(b_tx.protect(rtp(seq, 0x999)), info.local(1).rtp)
        assert await a.recv() == rtp(seq, 0x999)
    stats = await relay.stats(info.session_id)
    assert stats.legs[0][0].packets_in == 20 and stats.legs[1][0].packets_out == 20
    a.close()
    b.close()


async def test_srtp_to_srtp_and_rtp_to_rtp(relay: MediaRelay) -> None:
    a, b, c, d = [await Peer.open() for _ in range(4)]
    keys = [generate_params("AEAD_AES_256_GCM") for _ in range(4)]
    s1 = await relay.create_session()
    await relay.update_leg(s1.session_id, 0, 0, LegConfig(remote_rtp=a.addr, rx=keys[0],
                                                          tx=keys[1]))
    await relay.update_leg(s1.session_id, 1, 0, LegConfig(remote_rtp=b.addr, rx=keys[2],
                                                          tx=keys[3]))
    sent = SrtpContext(keys[0], outbound=True).protect(rtp(7))
    a.send(sent, s1.local(0).rtp)
    got = await b.recv()
    assert got != sent and SrtpContext(keys[3], outbound=False).unprotect(got) == rtp(7)
    s2 = await relay.create_session()
    await relay.update_leg(s2.session_id, 0, 0, LegConfig(remote_rtp=c.addr))
    await relay.update_leg(s2.session_id, 1, 0, LegConfig(remote_rtp=d.addr))
    c.send(rtp(1), s2.local(0).rtp)
    assert await d.recv() == rtp(1)
    d.send(rtp(2), s2.local(1).rtp)
    assert await c.recv() == rtp(2)
    for p in (a, b, c, d):
        p.close()


async def test_attacker_sending_first_gets_nothing(relay: MediaRelay) -> None:
    """RTP bleed: an attacker on another address sends first, on the SRTP and the plain leg."""
    a, b = await Peer.open(), await Peer.open()
    evil = await Peer.open("127.0.0.2")
    keys = [generate_params("AES_CM_128_HMAC_SHA1_80") for _ in range(2)]
    info = await relay.create_session()
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=None, rx=keys[0],
                                                            tx=keys[1]))
    b_tx = SrtpContext(keys[0], outbound=True)
    evil.send(rtp(1), info.local(1).rtp)
    evil.send(SrtpContext(generate_params("AES_CM_128_HMAC_SHA1_80"), outbound=True)
              .protect(rtp(1)), info.local(1).rtp)
    evil.send(rtp(1), info.local(0).rtp)
    assert await a.nothing()
    a.send(rtp(5), info.local(0).rtp)  # B's leg has no address yet: nowhere to go
    genuine = b_tx.protect(rtp(2))
    b.send(genuine, info.local(1).rtp)
    assert await a.recv() == rtp(2)
    evil.send(genuine, info.local(1).rtp)  # replay
    a.send(rtp(6), info.local(0).rtp)
    got = await b.recv()
    assert SrtpContext(keys[1], outbound=False).unprotect(got) == rtp(6)
    assert await evil.nothing() and await a.nothing(0.05)
    st = await relay.stats(info.session_id)
    assert st.legs[1][0].auth_failures == 2 and st.legs[1][0].replays == 1
    assert st.legs[0][0].drops["source"] == 1 and st.legs[0][0].drops["no_remote"] == 1
    assert st.legs[1][0].latched_rtp == b.addr
    for p in (a, b, evil):
        p.close()


async def test_separate_rtcp_ports_and_mux_per_leg(relay: MediaRelay) -> None:
    a_rtp, a_rtcp, b = await Peer.open(), await Peer.open(), await Peer.open()
    keys = [generate_params("AES_CM_128_HMAC_SHA1_32") for _ in range(2)]
    info = await relay.create_session(rtcp_mux=(False, True))
    local_a, local_b = info.local(0), info.local(1)
    assert local_a.rtp[1] % 2 == 0 and local_a.rtcp[1] == local_a.rtp[1] + 1
    assert local_b.rtcp == local_b.rtp
    await relay.update_leg(info.session_id, 0, 0, LegConfig(
        remote_rtp=a_rtp.addr, remote_rtcp=a_rtcp.addr, rtcp_mux=False))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr, rx=keys[0],
                                                            tx=keys[1]))
    a_rtcp.send(rtcp_rr(), local_a.rtcp)
    got = await b.recv()
    assert SrtpContext(keys[1], outbound=False).unprotect(got, rtcp=True) == rtcp_rr()
    b.send(SrtpContext(keys[0], outbound=True).protect(rtcp_rr(77), rtcp=True), local_b.rtp)
    assert await a_rtcp.recv() == rtcp_rr(77)
    b.send(rtcp_rr(78), local_b.rtp)  # plain RTCP on an SRTCP leg
    assert await a_rtcp.nothing()
    assert (await relay.stats(info.session_id)).legs[1][0].drops["plain_rtcp"] == 1
    assert a_rtp.queue.empty()
    for p in (a_rtp, a_rtcp, b):
        p.close()


async def test_answer_refusing_mux_binds_the_reserved_rtcp_port(relay: MediaRelay) -> None:
    a_rtp, a_rtcp, b = await Peer.open(), await Peer.open(), await Peer.open()
    info = await relay.create_session()
    await relay.update_leg(info.session_id, 0, 0, LegConfig(
        remote_rtp=a_rtp.addr, remote_rtcp=a_rtcp.addr, rtcp_mux=False))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr))
    b.send(rtcp_rr(5), info.local(1).rtp)
    assert await a_rtcp.recv() == rtcp_rr(5)
    a_rtcp.send(rtcp_rr(6), (info.local(0).rtp[0], info.local(0).rtp[1] + 1))
    assert await b.recv() == rtcp_rr(6)
    for p in (a_rtp, a_rtcp, b):
        p.close()


async def test_dtls_demux_hook_and_send_raw(relay: MediaRelay) -> None:
    a, b = await Peer.open(), await Peer.open()
    info = await relay.create_session()
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr, dtls=True))
    seen: list[tuple[bytes, tuple[str, int]]] = []
    relay.set_dtls_handler(info.session_id, 1, 0, lambda data, addr: seen.append((data, addr)))
    record = b"\x16\xfe\xfd" + bytes(20)
    b.send(record, info.local(1).rtp)
    a.send(rtp(1), info.local(0).rtp)
    assert await b.nothing()
    assert seen == [(record, b.addr)]
    relay.send_raw(info.session_id, 1, 0, b"\x16reply", b.addr)
    assert await b.recv() == b"\x16reply"
    stats = await relay.stats(info.session_id)
    assert stats.legs[0][0].drops["no_keys"] == 1
    with pytest.raises(UnknownSession):
        relay.set_dtls_handler("nope", 0, 0, None)
    a.close()
    b.close()


async def test_unencrypted_srtp_passes_clear_payload_authenticated(relay: MediaRelay) -> None:
    a, b = await Peer.open(), await Peer.open()
    rx = generate_params("AES_CM_128_HMAC_SHA1_80", unencrypted_srtp=True)
    tx = generate_params("AES_CM_128_HMAC_SHA1_80", unencrypted_srtp=True)
    info = await relay.create_session()
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr, rx=rx, tx=tx))
    a.send(rtp(3), info.local(0).rtp)
    got = await b.recv()
    assert got[:-10] == rtp(3)
    a.close()
    b.close()


async def test_inactivity_timeout_is_reported_once() -> None:
    fired: list[tuple[str, int]] = []
    relay = MediaRelay(media(timeout=0.3), on_timeout=lambda sid, s: fired.append((sid, s)))
    a, b = await Peer.open(), await Peer.open()
    info = await relay.create_session(streams=2)
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr))
    for _ in range(8):
        a.send(rtp(1), info.local(0, 0).rtp)
        await asyncio.sleep(0.1)
    assert fired == [(info.session_id, 1)]
    await asyncio.sleep(0.6)
    assert fired == [(info.session_id, 1), (info.session_id, 0)]
    assert (await relay.stats(info.session_id)).legs[0][0].last_packet is not None
    assert relay.totals().timeouts == 2
    await relay.close()
    a.close()
    b.close()


async def test_ports_exhausted_and_busy_ports_skipped() -> None:
    lo, hi = free_range(10)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", lo))
    relay = MediaRelay(MediaSection(port_min=lo, port_max=hi))
    try:
        first = await relay.create_session()
        assert {first.local(0).rtp[1], first.local(1).rtp[1]} == {lo + 2, lo + 4}
        second = await relay.create_session()
        assert {second.local(0).rtp[1], second.local(1).rtp[1]} == {lo + 6, lo + 8}
    except PortsExhausted:
        pytest.fail("a free pair was left")
    with pytest.raises(PortsExhausted):
        await relay.create_session()
    assert relay.totals().ports_free == 1  # the squatted port, retried when it frees up
    await relay.close_session(first.session_id)
    await relay.close_session(first.session_id)
    assert relay.totals().ports_free == 3
    await relay.close()
    squatter.close()


async def test_bad_requests_are_typed_errors(relay: MediaRelay) -> None:
    info = await relay.create_session()
    with pytest.raises(UnknownSession):
        await relay.update_leg("missing", 0, 0, LegConfig())
    with pytest.raises(ValueError):
        await relay.update_leg(info.session_id, 2, 0, LegConfig())
    with pytest.raises(ValueError):
        await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=("host", 5)))
    with pytest.raises(ValueError):
        await relay.create_session(streams=0)
    with pytest.raises(UnknownSession):
        await relay.stats("missing")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_kib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() // 1024


async def test_ten_thousand_sessions_leave_nothing_behind() -> None:
    relay = MediaRelay(media(size=400))
    keys = generate_params("AEAD_AES_128_GCM")
    peer = ("127.0.0.1", 9)

    async def churn(count: int) -> None:
        for _ in range(count):
            info = relay.create_session_now()
            relay.update_leg_now(info.session_id, 0, 0, LegConfig(remote_rtp=peer))
            relay.update_leg_now(info.session_id, 1, 0, LegConfig(remote_rtp=peer, rx=keys,
                                                                  tx=keys))
            relay.close_session_now(info.session_id)
        await asyncio.sleep(0)

    await churn(500)  # warm up allocator pools before taking the baseline
    gc.collect()
    fds, rss = _fds(), _rss_kib()
    await churn(10_000)
    gc.collect()
    totals = relay.totals()
    assert totals.sessions_active == 0 and totals.sessions_created == 10_500
    assert totals.ports_free == 200
    assert _fds() == fds
    assert _rss_kib() - rss < 4096
    await relay.close()


async def test_hold_address_sends_nothing(relay: MediaRelay) -> None:
    a, b = await Peer.open(), await Peer.open()
    info = await relay.create_session()
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=("0.0.0.0", b.addr[1])))
    a.send(rtp(1), info.local(0).rtp)
    assert await b.nothing()
    assert (await relay.stats(info.session_id)).legs[0][0].drops["no_remote"] == 1
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr))
    a.send(rtp(2), info.local(0).rtp)
    assert await b.recv() == rtp(2)
    a.close()
    b.close()


async def test_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    lo, hi = free_range(20)
    relay = MediaRelay(MediaSection(address="::1", port_min=lo, port_max=hi))
    a, b = await Peer.open("::1"), await Peer.open("::1")
    keys = [generate_params("AEAD_AES_256_GCM") for _ in range(2)]
    info = await relay.create_session()
    assert info.local(0).rtp[0] == "::1"
    await relay.update_leg(info.session_id, 0, 0,
                           LegConfig(remote_rtp=("0:0:0:0:0:0:0:1", a.addr[1])))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr, rx=keys[0],
                                                            tx=keys[1]))
    a.send(rtp(9), info.local(0).rtp)
    assert SrtpContext(keys[1], outbound=False).unprotect(await b.recv()) == rtp(9)
    b.send(SrtpContext(keys[0], outbound=True).protect(rtp(10)), info.local(1).rtp)
    assert await a.recv() == rtp(10)
    await relay.close()
    a.close()
    b.close()


async def test_roc_wrap_and_rekey_over_sockets(relay: MediaRelay) -> None:
    """SRTP->SRTP across a sequence wrap, then an offer/answer re-key, with no packet lost."""
    a, b = await Peer.open(), await Peer.open()
    suite = "AES_CM_128_HMAC_SHA1_80"
    a_key, relay_a, b_key, relay_b = (generate_params(suite) for _ in range(4))
    info = await relay.create_session()
    sid = info.session_id
    await relay.update_leg(sid, 0, 0, LegConfig(remote_rtp=a.addr, rx=a_key, tx=relay_a))
    await relay.update_leg(sid, 1, 0, LegConfig(remote_rtp=b.addr, rx=b_key, tx=relay_b))
    a_tx, b_rx = SrtpContext(a_key, outbound=True), SrtpContext(relay_b, outbound=False)

    async def through(first: int, count: int, tx: SrtpContext) -> None:
        for seq in range(first, first + count):
            a.send(tx.protect(rtp(seq)), info.local(0).rtp)
            if seq % 50 == 0:  # keep socket queues short
                await asyncio.sleep(0.005)
        for seq in range(first, first + count):
            assert b_rx.unprotect(await b.recv()) == rtp(seq)

    await through(65_300, 400, a_tx)  # wraps at 65,536: ROC 0 -> 1 on both legs
    new_key = generate_params(suite)
    new_tx = SrtpContext(new_key, outbound=True)
    await relay.add_rx(sid, 0, 0, new_key)  # re-INVITE offer from A carries a new key
    await through(65_700, 10, a_tx)  # old key still good
    await relay.update_leg(sid, 0, 0, LegConfig(remote_rtp=a.addr, rx=new_key, tx=relay_a))
    carry_roc(a_tx, new_tx)  # RFC 3711 §3.3.1/RFC 4568 §7.1.4: A's new key continues its ROC (1)
    await through(65_710, 10, new_tx)  # A switched after the answer
    st = await relay.stats(sid)
    assert st.auth_failures == 0 and st.replays == 0
    assert st.legs[1][0].packets_out == 420
    a.close()
    b.close()


async def test_answer_accepting_mux_sends_rtcp_from_the_rtp_port(relay: MediaRelay) -> None:
    a, b = await Peer.open(), await Peer.open()
    info = await relay.create_session(rtcp_mux=(False, True))
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr, rtcp_mux=True))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr))
    b.send(rtcp_rr(3), info.local(1).rtp)
    data, src = await asyncio.wait_for(a.queue.get(), 2)
    assert data == rtcp_rr(3) and src[1] == info.local(0).rtp[1]
    with pytest.raises(ValueError):
        await relay.create_session(timeout=-1)
    a.close()
    b.close()


async def test_oversize_and_garbage_are_dropped_as_malformed(relay: MediaRelay) -> None:
    a, b = await Peer.open(), await Peer.open()
    info = await relay.create_session()
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr))
    a.send(rtp(1, payload=bytes(1600)), info.local(0).rtp)
    a.send(b"\x00\x01\x00\x00" + bytes(16), info.local(0).rtp)  # STUN-like
    a.send(b"\x80", info.local(0).rtp)
    a.send(b"\x16\xfe\xfd" + bytes(10), info.local(0).rtp)  # DTLS without a handler
    a.send(rtp(2, payload=bytes(1488)), info.local(0).rtp)  # exactly 1500 bytes: fine
    assert len(await b.recv()) == 1500
    assert (await relay.stats(info.session_id)).legs[0][0].drops["malformed"] == 4
    a.close()
    b.close()


async def test_ssrc_change_mid_call_flows_both_ways(relay: MediaRelay) -> None:
    a, b = await Peer.open(), await Peer.open()
    keys = [generate_params("AEAD_AES_128_GCM") for _ in range(2)]
    info = await relay.create_session()
    await relay.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.addr))
    await relay.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.addr, rx=keys[0],
                                                            tx=keys[1]))
    b_rx, b_tx = SrtpContext(keys[1], outbound=False), SrtpContext(keys[0], outbound=True)
    for ssrc, first in ((0x1111, 100), (0x2222, 40000), (0x1111, 105)):
        for seq in range(first, first + 3):
            a.send(rtp(seq, ssrc), info.local(0).rtp)
            assert b_rx.unprotect(await b.recv()) == rtp(seq, ssrc)
            b.send(b_tx.protect(rtp(seq, ssrc + 1)), info.local(1).rtp)
            assert await a.recv() == rtp(seq, ssrc + 1)
    a.close()
    b.close()
