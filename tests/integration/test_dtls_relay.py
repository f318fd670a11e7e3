"""DTLS-SRTP on a relay leg: a real DTLS peer on one leg, plain RTP on the other, through the
uvloop relay on loopback. The handshake rides the leg's media socket; the keys land in the
relay's own SRTP contexts (the SDES hot path)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest
import uvloop
from cryptography.hazmat.primitives import hashes

from gateway.config import DtlsSection, HostPort, MediaSection, Trunk
from gateway.media.api import LegConfig, SrtpParams, generate_params
from gateway.media.dtls import DtlsConfigError
from gateway.media.dtls_events import HandshakeCompleted
from gateway.media.dtls_identity import DtlsIdentity
from gateway.media.dtls_leg import DtlsLeg
from gateway.media.relay import MediaRelay
from gateway.media.srtp import SrtpContext
from gateway.ops.keys import make_self_signed
from gateway.sdp.dtls import answer_setup, new_tls_id, role_for_setup, role_from_answer
from tests.support.dtls_peer import BaresipLikePeer

pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")
LOOP = "127.0.0.1"


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


def free_range(size: int = 400) -> tuple[int, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOP, 0))
        base = s.getsockname()[1]
    base = min(base, 65535 - size - 2) & ~1
    return base, base + size - 1


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x5EED) + bytes([seq & 0xFF]) * 160


class Plain(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(data)

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]


class Call:
    """One relay session: leg 0 DTLS-SRTP toward ``peer``, leg 1 plain RTP toward ``plain``."""

    def __init__(self, relay: MediaRelay, peer: BaresipLikePeer, plain: Plain,
                 fingerprints: list[tuple[str, str]] | None = None) -> None:
        self.relay, self.peer, self.plain = relay, peer, plain
        self.info = relay.create_session_now()
        self.sid = self.info.session_id
        key, cert = make_self_signed("relay dtls")
        self.identity = DtlsIdentity(cert, key)
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[HandshakeCompleted] = loop.create_future()
        self.failed: asyncio.Future[str] = loop.create_future()
        self.leg = DtlsLeg(relay, self.sid, 0, 0, self.identity, new_tls_id(),
                           on_failed=lambda r: self.failed.done() or self.failed.set_result(r),
                           on_connected=lambda e: self.connected.done()
                           or self.connected.set_result(e),
                           suites=["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"],
                           handshake_timeout=3.0)
        self.fingerprints = fingerprints or [("SHA-256", peer.fingerprint())]
        self.base = LegConfig(remote_rtp=peer.addr)
        relay.update_leg_now(self.sid, 0, 0, self.leg.config(self.base))
        relay.update_leg_now(self.sid, 1, 0, LegConfig(remote_rtp=plain.addr))

    @property
    def dtls_addr(self) -> tuple[str, int]:
        return self.info.local(0).rtp

    @property
    def plain_addr(self) -> tuple[str, int]:
        return self.info.local(1).rtp

    async def outcome(self) -> object:
        done, _ = await asyncio.wait([self.connected, self.failed], timeout=8.0,
                                     return_when=asyncio.FIRST_COMPLETED)
        assert done, "handshake neither completed nor failed"
        return done.pop().result()

    async def keyed(self) -> None:
        for _ in range(100):
            if self.relay._find(self.sid, 0, 0)[1].rx is not None:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("keys never reached the relay")


@pytest.fixture
async def relay():
    lo, hi = free_range()
    r = MediaRelay(MediaSection(address=LOOP, port_min=lo, port_max=hi))
    yield r
    r.close_now()


@pytest.fixture
async def plain():
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Plain, local_addr=(LOOP, 0))
    yield proto
    transport.close()


async def recv_from(sock: socket.socket) -> bytes:
    sock.settimeout(2.0)
    data, _ = await asyncio.to_thread(sock.recvfrom, 4096)
    return data


@pytest.mark.parametrize(("peer_setup", "our_role"), [("actpass", "client"),
                                                      ("active", "server")])
async def test_dtls_leg_to_plain_rtp_both_ways(relay: MediaRelay, plain: Plain,
                                               peer_setup: str, our_role: str) -> None:
    """The peer offers; we answer per RFC 5763 §5 and run the handshake in the resulting role."""
    role = role_for_setup(answer_setup(peer_setup))  # type: ignore[arg-type]
    assert role == our_role
    peer = BaresipLikePeer("server" if role == "client" else "client")
    try:
        call = Call(relay, peer, plain)
        assert plain.transport is not None
        # Before the handshake: plain RTP toward the DTLS leg goes nowhere.
        plain.transport.sendto(rtp(1), call.plain_addr)
        await asyncio.sleep(0.1)
        assert relay.totals().drops["no_keys"] >= 1
        thread = asyncio.create_task(asyncio.to_thread(peer.handshake, call.dtls_addr))
        call.leg.start(role, peer.addr, call.fingerprints, call.base)
        event = await call.outcome()
        await thread
        assert peer.error is None and isinstance(event, HandshakeCompleted)
        assert event.keys.suite == "AES_CM_128_HMAC_SHA1_80"  # all baresip offers
        await call.keyed()
        assert peer.tx is not None and peer.rx is not None
        for seq in range(2, 7):
            peer.sock.sendto(peer.tx.protect(rtp(seq)), call.dtls_addr)
            assert await asyncio.wait_for(plain.queue.get(), 2.0) == rtp(seq)
            plain.transport.sendto(rtp(100 + seq), call.plain_addr)
            assert peer.rx.unprotect(await recv_from(peer.sock)) == rtp(100 + seq)
        stats = relay.stats_now(call.sid)
        assert stats.legs[0][0].packets_in == 5 and stats.legs[0][0].auth_failures == 0
        call.leg.close()
    finally:
        peer.close()


async def test_peer_answers_active_and_its_hello_beats_the_answer(relay: MediaRelay,
                                                                  plain: Plain) -> None:
    """We offered actpass; the answerer's ClientHello arrives before its SDP answer."""
    peer = BaresipLikePeer("client")
    try:
        call = Call(relay, peer, plain)
        thread = asyncio.create_task(asyncio.to_thread(peer.handshake, call.dtls_addr))
        await asyncio.sleep(0.3)  # hello sent and queued by the leg; no answer yet
        assert call.leg.state == "listening"
        call.leg.start(role_from_answer("active"), peer.addr, call.fingerprints, call.base)
        event = await call.outcome()
        await thread
        assert isinstance(event, HandshakeCompleted) and peer.error is None
        await call.keyed()
        assert peer.tx is not None and plain.transport is not None
        peer.sock.sendto(peer.tx.protect(rtp(9)), call.dtls_addr)
        assert await asyncio.wait_for(plain.queue.get(), 2.0) == rtp(9)
    finally:
        peer.close()


async def test_fingerprint_mismatch_fails_the_leg_and_no_media_flows(
        relay: MediaRelay, plain: Plain, caplog: pytest.LogCaptureFixture) -> None:
    peer = BaresipLikePeer("server")
    try:
        other = BaresipLikePeer("server")
        wrong = [("sha-256", other.fingerprint(hashes.SHA256()))]
        other.close()
        call = Call(relay, peer, plain, fingerprints=wrong)
        with caplog.at_level(logging.WARNING, logger="srtpgw.security"):
            thread = asyncio.create_task(asyncio.to_thread(peer.handshake, call.dtls_addr, 3.0))
            call.leg.start("client", peer.addr, call.fingerprints, call.base)
            event = await call.outcome()
            await thread
        assert event == "fingerprint-mismatch" and call.leg.state == "failed"
        assert call.leg.keys is None and relay._find(call.sid, 0, 0)[1].rx is None
        assert any(r.getMessage() == "dtls.failed" for r in caplog.records)
        assert plain.transport is not None
        plain.transport.sendto(rtp(1), call.plain_addr)
        await asyncio.sleep(0.1)
        assert relay.stats_now(call.sid).legs[0][0].packets_out == 0
    finally:
        peer.close()


async def test_dtls_from_a_stranger_is_ignored(relay: MediaRelay, plain: Plain) -> None:
    peer = BaresipLikePeer("server")
    stranger = BaresipLikePeer("client")
    try:
        call = Call(relay, peer, plain)
        call.leg.start("client", peer.addr, call.fingerprints, call.base)
        thread = asyncio.create_task(asyncio.to_thread(peer.handshake, call.dtls_addr))
        stranger_thread = asyncio.create_task(
            asyncio.to_thread(stranger.handshake, call.dtls_addr, 0.5))
        event = await call.outcome()
        await thread
        await stranger_thread
        assert isinstance(event, HandshakeCompleted)
        assert stranger.error == "timeout" and call.leg.dropped >= 1
    finally:
        peer.close()
        stranger.close()


async def test_keyed_dtls_leg_runs_the_sdes_hot_path(relay: MediaRelay, plain: Plain) -> None:
    """Same contexts as an SDES leg: SrtpContext objects built from SrtpParams of the keys."""
    peer = BaresipLikePeer("server")
    try:
        call = Call(relay, peer, plain)
        thread = asyncio.create_task(asyncio.to_thread(peer.handshake, call.dtls_addr))
        call.leg.start("client", peer.addr, call.fingerprints, call.base)
        event = await call.outcome()
        await thread
        assert isinstance(event, HandshakeCompleted)
        await call.keyed()
        stream = relay._find(call.sid, 0, 0)[1]
        assert isinstance(stream.rx, SrtpContext) and isinstance(stream.tx, SrtpContext)
        assert stream.rx.params == SrtpParams(event.keys.suite, event.keys.rx)
        assert stream.tx.params == SrtpParams(event.keys.suite, event.keys.tx)
        cfg = call.leg.config(call.base)
        assert cfg.dtls and cfg.rx == stream.rx.params
        assert event.keys.rx.hex() not in repr(cfg) and repr(event.keys.rx) not in repr(cfg)
    finally:
        peer.close()


@pytest.mark.parametrize("accept_sha1", [True, False])
async def test_for_trunk_applies_dtls_section_and_trunk(relay: MediaRelay, plain: Plain,
                                                        accept_sha1: bool) -> None:
    trunk = Trunk(name="carrier", side="secure", transport="tls", peer=HostPort(LOOP, 5061),
                  listener="tls", media="dtls-srtp",
                  suites=("AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"))
    section = DtlsSection(handshake_timeout=2.0, accept_sha1_fingerprint=accept_sha1)
    peer = BaresipLikePeer("server")
    try:
        info = relay.create_session_now()
        key, cert = make_self_signed("relay dtls")
        outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        leg = DtlsLeg.for_trunk(relay, info.session_id, 0, 0, DtlsIdentity(cert, key),
                                new_tls_id(), section, trunk,
                                on_failed=lambda r: outcome.done() or outcome.set_result(r),
                                on_connected=lambda e: outcome.done() or outcome.set_result(e))
        thread = asyncio.create_task(asyncio.to_thread(peer.handshake, info.local(0).rtp, 3.0))
        leg.start("client", peer.addr, [("SHA-1", peer.fingerprint(hashes.SHA1()))],
                  LegConfig(remote_rtp=peer.addr))
        result = await asyncio.wait_for(outcome, 8.0)
        await thread
        if accept_sha1:
            assert isinstance(result, HandshakeCompleted)
            assert result.keys.suite == "AES_CM_128_HMAC_SHA1_80"
        else:
            assert result == "fingerprint-sha1-refused"
        leg.close()
        leg.close()
    finally:
        peer.close()


async def test_nat_learning_survives_an_impostor_racing_the_peer(
        relay: MediaRelay, plain: Plain, caplog: pytest.LogCaptureFixture) -> None:
    """With nat_learning the first source latches; if it fails verification the leg starts over
    instead of failing, and the real peer (retransmitting its hello) gets through."""
    peer = BaresipLikePeer("client")
    impostor = BaresipLikePeer("client")
    try:
        info = relay.create_session_now()
        key, cert = make_self_signed("relay dtls")
        outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        leg = DtlsLeg(relay, info.session_id, 0, 0, DtlsIdentity(cert, key), new_tls_id(),
                      on_failed=lambda r: outcome.done() or outcome.set_result(r),
                      on_connected=lambda e: outcome.done() or outcome.set_result(e),
                      nat_learning=True, handshake_timeout=6.0)
        signalled = ("127.0.0.9", peer.addr[1])  # the peer's SDP address is not its source
        leg.start("server", signalled, [("sha-256", peer.fingerprint())],
                  LegConfig(remote_rtp=signalled, nat_learning=True))
        with caplog.at_level(logging.WARNING, logger="srtpgw.security"):
            first = asyncio.create_task(asyncio.to_thread(impostor.handshake, info.local(0).rtp,
                                                          2.0))
            await asyncio.sleep(0.1)
            second = asyncio.create_task(asyncio.to_thread(peer.handshake, info.local(0).rtp))
            result = await asyncio.wait_for(outcome, 10.0)
            await first
            await second
        assert isinstance(result, HandshakeCompleted), result
        assert impostor.tx is None and peer.tx is not None
        rejected = [r for r in caplog.records if r.getMessage() == "dtls.source_rejected"]
        assert len(rejected) == 1
        assert rejected[0].fields["source"] == impostor.addr  # type: ignore[attr-defined]
    finally:
        peer.close()
        impostor.close()


async def test_relay_session_closed_mid_handshake_stops_quietly(relay: MediaRelay) -> None:
    """The call ends (relay session closed) while our ClientHello is being retransmitted: no
    traceback from the retransmission timer, no failure reported for a call that is gone."""
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOOP, 0))
    try:
        info = relay.create_session_now()
        key, cert = make_self_signed("relay dtls")
        failures: list[str] = []
        leg = DtlsLeg(relay, info.session_id, 0, 0, DtlsIdentity(cert, key), new_tls_id(),
                      on_failed=failures.append, handshake_timeout=2.0)
        leg.start("client", silent.getsockname(), [("sha-256", "00:11")],
                  LegConfig(remote_rtp=silent.getsockname()))
        relay.close_session_now(info.session_id)
        await asyncio.sleep(2.5)  # past the 1 s retransmission and the 2 s deadline
        leg.close()
        assert errors == [] and failures == []
    finally:
        silent.close()


async def keyed_leg(relay: MediaRelay, sid: str, leg_no: int, peer: BaresipLikePeer,
                    addr: tuple[str, int]) -> DtlsLeg:
    """A DTLS leg whose handshake with ``peer`` (a server) has completed and keys installed."""
    key, cert = make_self_signed("relay dtls")
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    leg = DtlsLeg(relay, sid, leg_no, 0, DtlsIdentity(cert, key), new_tls_id(),
                  on_failed=lambda r: done.done() or done.set_result(r),
                  on_connected=lambda e: done.done() or done.set_result(e))
    thread = asyncio.create_task(asyncio.to_thread(peer.handshake, addr))
    base = LegConfig(remote_rtp=peer.addr)
    relay.update_leg_now(sid, leg_no, 0, leg.config(base))
    leg.start("client", peer.addr, [("sha-256", peer.fingerprint())], base)
    assert isinstance(await asyncio.wait_for(done, 8.0), HandshakeCompleted)
    await thread
    for _ in range(100):
        if relay._find(sid, leg_no, 0)[1].rx is not None:
            break
        await asyncio.sleep(0.01)
    return leg


async def test_dtls_to_dtls_with_independent_keys(relay: MediaRelay) -> None:
    """Both legs DTLS-SRTP, each with its own association: media crosses, keys differ."""
    left, right = BaresipLikePeer("server"), BaresipLikePeer("server")
    try:
        info = relay.create_session_now()
        sid = info.session_id
        leg0 = await keyed_leg(relay, sid, 0, left, info.local(0).rtp)
        leg1 = await keyed_leg(relay, sid, 1, right, info.local(1).rtp)
        assert leg0.keys is not None and leg1.keys is not None
        assert {leg0.keys.tx, leg0.keys.rx}.isdisjoint({leg1.keys.tx, leg1.keys.rx})
        assert left.tx and left.rx and right.tx and right.rx
        for seq in range(1, 4):
            left.sock.sendto(left.tx.protect(rtp(seq)), info.local(0).rtp)
            assert right.rx.unprotect(await recv_from(right.sock)) == rtp(seq)
            right.sock.sendto(right.tx.protect(rtp(50 + seq)), info.local(1).rtp)
            assert left.rx.unprotect(await recv_from(left.sock)) == rtp(50 + seq)
    finally:
        left.close()
        right.close()


async def test_dtls_to_sdes_leg(relay: MediaRelay, plain: Plain) -> None:
    """DTLS-SRTP on one leg, SDES-keyed SRTP on the other (keys generated per leg)."""
    peer = BaresipLikePeer("server")
    try:
        info = relay.create_session_now()
        sid = info.session_id
        ours_tx, theirs_tx = (generate_params("AEAD_AES_128_GCM"),
                              generate_params("AEAD_AES_128_GCM"))
        relay.update_leg_now(sid, 1, 0, LegConfig(remote_rtp=plain.addr, rx=theirs_tx,
                                                  tx=ours_tx))
        await keyed_leg(relay, sid, 0, peer, info.local(0).rtp)
        assert peer.tx is not None and peer.rx is not None and plain.transport is not None
        sdes_out = SrtpContext(theirs_tx, outbound=True)
        sdes_in = SrtpContext(ours_tx, outbound=False)
        peer.sock.sendto(peer.tx.protect(rtp(7)), info.local(0).rtp)
        assert sdes_in.unprotect(await asyncio.wait_for(plain.queue.get(), 2.0)) == rtp(7)
        plain.transport.sendto(sdes_out.protect(rtp(8)), info.local(1).rtp)
        assert peer.rx.unprotect(await recv_from(peer.sock)) == rtp(8)
    finally:
        peer.close()


async def test_new_association_rekeys_the_leg_without_touching_the_other(
        relay: MediaRelay, plain: Plain) -> None:
    """re-INVITE with a new tls-id: close the old DtlsLeg, handshake again, new keys in the
    relay; the plain leg is untouched and media keeps flowing."""
    first, second = BaresipLikePeer("server"), BaresipLikePeer("server")
    try:
        info = relay.create_session_now()
        sid = info.session_id
        relay.update_leg_now(sid, 1, 0, LegConfig(remote_rtp=plain.addr))
        old = await keyed_leg(relay, sid, 0, first, info.local(0).rtp)
        assert first.tx is not None and plain.transport is not None
        first.sock.sendto(first.tx.protect(rtp(1)), info.local(0).rtp)
        assert await asyncio.wait_for(plain.queue.get(), 2.0) == rtp(1)
        old.close()
        second.sock.close()  # the re-INVITE moved the peer: new socket at the same address
        second.sock = first.sock
        second.addr = first.addr
        new = await keyed_leg(relay, sid, 0, second, info.local(0).rtp)
        assert new.keys is not None and old.keys is not None and new.keys.rx != old.keys.rx
        assert second.tx is not None
        second.sock.sendto(second.tx.protect(rtp(2)), info.local(0).rtp)
        assert await asyncio.wait_for(plain.queue.get(), 2.0) == rtp(2)
        stream = relay._find(sid, 0, 0)[1]
        assert stream.rx is not None and stream.rx.params.key == new.keys.rx
    finally:
        first.close()


async def test_trunk_without_a_dtls_profile_is_refused_up_front(relay: MediaRelay) -> None:
    trunk = Trunk(name="carrier", side="secure", transport="tls", peer=HostPort(LOOP, 5061),
                  listener="tls", media="dtls-srtp", suites=("AES_256_CM_HMAC_SHA1_80",))
    info = relay.create_session_now()
    key, cert = make_self_signed("relay dtls")
    with pytest.raises(DtlsConfigError):
        DtlsLeg.for_trunk(relay, info.session_id, 0, 0, DtlsIdentity(cert, key), new_tls_id(),
                          DtlsSection(), trunk, on_failed=lambda r: None)
