"""DTLS-SRTP without rtcp-mux (RFC 5764 §4.1): a second DTLS association on the RTCP port keys
SRTCP. An independent RSA/sha-1 pyOpenSSL peer runs one association per port (same certificate,
same role), leg 1 is plain RTP/RTCP on separate ports; everything over real loopback sockets
through the uvloop relay."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest
import uvloop

from gateway.config import MediaSection
from gateway.media.api import Address, LegConfig
from gateway.media.dtls_events import HandshakeCompleted
from gateway.media.dtls_identity import DtlsIdentity
from gateway.media.dtls_leg import DtlsLeg
from gateway.media.relay import MediaRelay
from gateway.ops.keys import make_self_signed
from gateway.sdp.dtls import new_tls_id
from tests.integration.test_dtls_relay import Plain, free_range, recv_from, rtp
from tests.support.dtls_peer import BaresipLikePeer

pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")
LOOP = "127.0.0.1"


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture
async def relay():
    lo, hi = free_range()
    r = MediaRelay(MediaSection(address=LOOP, port_min=lo, port_max=hi))
    yield r
    r.close_now()


def rtcp_sr(ssrc: int, n: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes([n]) * 20


async def endpoint() -> tuple[asyncio.DatagramTransport, Plain]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Plain, local_addr=(LOOP, 0))
    return transport, proto  # type: ignore[return-value]


class NonMuxCall:
    """Leg 0: DTLS toward ``peer`` (RTP port) and ``peer_rtcp`` (its RTCP port, signalled with
    a=rtcp); leg 1: plain RTP and RTCP on two ports. Neither leg uses rtcp-mux."""

    def __init__(self, relay: MediaRelay, peer: BaresipLikePeer, peer_rtcp: BaresipLikePeer,
                 plain: Plain, plain_rtcp: Plain, timeout: float = 4.0) -> None:
        self.relay = relay
        self.info = relay.create_session_now(rtcp_mux=(False, False))
        self.sid = self.info.session_id
        key, cert = make_self_signed("relay dtls")
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[HandshakeCompleted] = loop.create_future()
        self.failures: list[str] = []
        self.leg = DtlsLeg(relay, self.sid, 0, 0, DtlsIdentity(cert, key), new_tls_id(),
                           on_failed=self.failures.append,
                           on_connected=lambda e: self.connected.done()
                           or self.connected.set_result(e),
                           handshake_timeout=timeout)
        self.fingerprints = [("SHA-256", peer.fingerprint())]
        self.base = LegConfig(remote_rtp=peer.addr, remote_rtcp=peer_rtcp.addr, rtcp_mux=False)
        relay.update_leg_now(self.sid, 0, 0, self.leg.config(self.base))
        relay.update_leg_now(self.sid, 1, 0, LegConfig(remote_rtp=plain.addr,
                                                       remote_rtcp=plain_rtcp.addr,
                                                       rtcp_mux=False))

    def local(self, leg: int, rtcp: bool = False) -> Address:
        ours = self.info.local(leg)
        return ours.rtcp if rtcp else ours.rtp

    async def keyed(self, rtcp: bool) -> None:
        ep = self.relay._find(self.sid, 0, 0)[1]
        for _ in range(300):
            if (ep.rtcp_rx if rtcp else ep.rx) is not None:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("keys never reached the relay")


async def test_rtcp_port_runs_its_own_association_and_keys_srtcp(relay: MediaRelay) -> None:
    peer = BaresipLikePeer("server")
    peer_rtcp = BaresipLikePeer("server", twin=peer)
    (t1, plain), (t2, plain_rtcp) = await endpoint(), await endpoint()
    try:
        call = NonMuxCall(relay, peer, peer_rtcp, plain, plain_rtcp)
        assert call.leg.rtcp_state == "listening"  # early ClientHellos are queued per port
        assert call.local(0, rtcp=True)[1] == call.local(0)[1] + 1
        hs = [asyncio.create_task(asyncio.to_thread(p.handshake, call.local(0, rtcp)))
              for p, rtcp in ((peer, False), (peer_rtcp, True))]
        call.leg.start("client", peer.addr, call.fingerprints, call.base)
        await asyncio.wait_for(asyncio.gather(*hs), 10)
        assert peer.error is None and peer_rtcp.error is None
        await call.keyed(rtcp=False)
        await call.keyed(rtcp=True)
        assert call.leg.state == call.leg.rtcp_state == "connected" and not call.failures
        assert call.leg.keys is not None and call.leg.rtcp_keys is not None
        assert call.leg.keys.rx != call.leg.rtcp_keys.rx  # two associations, two key sets
        assert peer.tx and peer.rx and peer_rtcp.tx and peer_rtcp.rx

        for n in range(1, 4):
            # RTCP both ways: SRTCP under the RTCP association's keys <-> plain RTCP port
            peer_rtcp.sock.sendto(peer_rtcp.tx.protect_rtcp(rtcp_sr(0xA, n)),
                                  call.local(0, rtcp=True))
            assert await asyncio.wait_for(plain_rtcp.queue.get(), 2.0) == rtcp_sr(0xA, n)
            t2.sendto(rtcp_sr(0xB, n), call.local(1, rtcp=True))
            peer_rtcp.sock.settimeout(2.0)
            data, src = await asyncio.to_thread(peer_rtcp.sock.recvfrom, 4096)
            assert src == call.local(0, rtcp=True)
            assert peer_rtcp.rx.unprotect_rtcp(data) == rtcp_sr(0xB, n)
            # RTP both ways on the RTP association
            peer.sock.sendto(peer.tx.protect(rtp(n)), call.local(0))
            assert await asyncio.wait_for(plain.queue.get(), 2.0) == rtp(n)
            t1.sendto(rtp(50 + n), call.local(1))
            assert peer.rx.unprotect(await recv_from(peer.sock)) == rtp(50 + n)

        # SRTCP keyed with the RTP association's keys is not what the RTCP port accepts.
        # (indexes 1..3 fail the replay check first, the later ones authentication)
        for n in range(5):
            peer_rtcp.sock.sendto(peer.tx.protect_rtcp(rtcp_sr(0xA, 9 + n)),
                                  call.local(0, rtcp=True))
        await asyncio.sleep(0.2)
        stats = relay.stats_now(call.sid).legs[0][0]
        assert stats.auth_failures >= 1 and stats.auth_failures + stats.replays == 5
        assert plain_rtcp.queue.empty()
        assert stats.latched_rtcp == peer_rtcp.addr and stats.latched_rtp == peer.addr
        call.leg.close()
    finally:
        t1.close()
        t2.close()
        peer.close()
        peer_rtcp.close()


async def test_silent_rtcp_port_fails_only_rtcp(relay: MediaRelay) -> None:
    """A peer that never answers on its RTCP port: RTP is keyed and flows, the call is not
    failed, and the leg's RTCP stays without keys (dropped, counted as no_keys)."""
    peer = BaresipLikePeer("server")
    mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mute.bind((LOOP, 0))
    (t1, plain), (t2, plain_rtcp) = await endpoint(), await endpoint()
    try:
        call = NonMuxCall(relay, peer, peer, plain, plain_rtcp, timeout=1.0)
        call.base = LegConfig(remote_rtp=peer.addr, remote_rtcp=mute.getsockname(),
                              rtcp_mux=False)
        hs = asyncio.create_task(asyncio.to_thread(peer.handshake, call.local(0)))
        call.leg.start("client", peer.addr, call.fingerprints, call.base)
        await asyncio.wait_for(hs, 10)
        await call.keyed(rtcp=False)
        mute.settimeout(2.0)
        hello, _ = await asyncio.to_thread(mute.recvfrom, 4096)
        assert hello[0] == 22  # our ClientHello left from the RTCP port toward the RTCP address
        for _ in range(40):
            if call.leg.rtcp_failed:
                break
            await asyncio.sleep(0.1)
        assert call.leg.rtcp_failed is not None and call.leg.rtcp_state == "failed"
        assert not call.failures and call.leg.state == "connected"
        assert peer.tx is not None
        peer.sock.sendto(peer.tx.protect(rtp(7)), call.local(0))
        assert await asyncio.wait_for(plain.queue.get(), 2.0) == rtp(7)
        t2.sendto(rtcp_sr(0xB, 1), call.local(1, rtcp=True))
        await asyncio.sleep(0.2)
        assert relay.stats_now(call.sid).legs[1][0].drops["no_keys"] == 1
        call.leg.close()
    finally:
        t1.close()
        t2.close()
        mute.close()
        peer.close()


async def test_send_raw_from_the_rtcp_port_binds_it_and_a_muxed_leg_has_no_rtcp_dtls(
        relay: MediaRelay) -> None:
    info = relay.create_session_now(rtcp_mux=(True, True))
    sid = info.session_id
    got: list[tuple[bytes, Address]] = []
    relay.set_dtls_handler(sid, 0, 0, lambda d, a: got.append((d, a)), rtcp=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOP, 0))
        relay.send_raw(sid, 0, 0, b"\x16hello", probe.getsockname(), rtcp=True)
        probe.settimeout(2.0)
        data, src = await asyncio.to_thread(probe.recvfrom, 100)
        assert data == b"\x16hello" and src == (LOOP, info.local(0).rtp[1] + 1)
        probe.sendto(b"\x16back", src)  # DTLS on the RTCP port goes to the RTCP handler
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [(b"\x16back", probe.getsockname())]
