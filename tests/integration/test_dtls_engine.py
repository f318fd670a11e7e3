"""The DTLS-SRTP engine over real UDP sockets on loopback.

Peers: a second instance of our engine, and an independent pyOpenSSL peer that mimics baresip
(RSA key, self-signed certificate signed sha1WithRSAEncryption, ECDHE-RSA-AES256-GCM-SHA384 when
it serves, SRTP_AES128_CM_SHA1_80 only) and does its own RFC 5764 key split. Keys are checked by
sending SRTP packets protected on one side through the sockets and unprotecting them on the other.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

import pylibsrtp
import pytest
from cryptography.hazmat.primitives import hashes

from gateway.media.dtls import DtlsSession
from gateway.media.dtls_endpoint import DtlsEndpoint
from gateway.media.dtls_events import HandshakeCompleted
from gateway.media.dtls_identity import DtlsIdentity
from gateway.ops.keys import make_self_signed
from tests.support.dtls_peer import LOOP, SHA1_80, BaresipLikePeer, fingerprint_of, srtp_session

RTP = bytes([0x80, 0x00, 0x00, 0x05, 0, 0, 1, 0, 0xCA, 0xFE, 0xBA, 0xBE]) + b"\x7f" * 160
LIBSRTP = {"AES_CM_128_HMAC_SHA1_80": SHA1_80,
           "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
           "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
           "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM}


@dataclass
class Ours(asyncio.DatagramProtocol):
    """Our engine on a UDP socket: DTLS to the endpoint, SRTP to ``media``."""

    remote: tuple[str, int] | None = None
    endpoint: DtlsEndpoint | None = None
    transport: asyncio.DatagramTransport | None = None
    media: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    connected: asyncio.Future[HandshakeCompleted] | None = None
    failed: asyncio.Future[str] | None = None
    drop_first: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.remote is None:
            self.remote = addr
        if 20 <= data[0] <= 63:
            assert self.endpoint is not None
            self.endpoint.datagram_received(data)
        else:
            self.media.put_nowait(data)

    def send(self, data: bytes) -> None:
        if self.drop_first > 0:  # simulated loss of our first flight
            self.drop_first -= 1
            return
        assert self.transport is not None and self.remote is not None
        self.transport.sendto(data, self.remote)

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")


async def ours(identity: DtlsIdentity, role: str, fingerprints: list[tuple[str, str]],
               remote: tuple[str, int] | None = None, **kw: object) -> Ours:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Ours, local_addr=(LOOP, 0))
    proto.remote = remote
    proto.connected = loop.create_future()
    proto.failed = loop.create_future()
    session = DtlsSession(identity, role, remote_fingerprints=fingerprints, **kw)  # type: ignore[arg-type]

    def done(fut: asyncio.Future, value: object) -> None:
        if not fut.done():
            fut.set_result(value)

    proto.endpoint = DtlsEndpoint(session, proto.send,
                                  on_connected=lambda e: done(proto.connected, e),
                                  on_failed=lambda r: done(proto.failed, r),
                                  context={"test": "engine"})
    return proto


def identity() -> DtlsIdentity:
    key, cert = make_self_signed("srtpgw test dtls")
    return DtlsIdentity(cert, key)


async def first(*futures: asyncio.Future, timeout: float = 8.0) -> object:
    done, _ = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    assert done, "neither connected nor failed in time"
    return done.pop().result()


async def exchange_srtp(a: Ours, ka: HandshakeCompleted, b: Ours, kb: HandshakeCompleted) -> None:
    profile = LIBSRTP[ka.keys.suite]
    for src, src_keys, dst, dst_keys in ((a, ka, b, kb), (b, kb, a, ka)):
        assert src.transport is not None
        src.transport.sendto(srtp_session(src_keys.keys.tx, profile, True).protect(RTP),
                             dst.addr)
        packet = await asyncio.wait_for(dst.media.get(), 2.0)
        assert packet != RTP
        assert srtp_session(dst_keys.keys.rx, profile, False).unprotect(packet) == RTP


@pytest.mark.parametrize("suite", ["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_32"])
async def test_two_engines_handshake_and_keys_match(suite: str) -> None:
    ia, ib = identity(), identity()
    server = await ours(ib, "server", [("sha-256", ia.fingerprint())], suites=[suite])
    client = await ours(ia, "client", [("sha-256", ib.fingerprint())], remote=server.addr,
                        suites=[suite])
    assert server.endpoint and client.endpoint and client.connected and server.connected
    server.endpoint.start()
    client.endpoint.start()
    kc = await first(client.connected, client.failed)
    ks = await first(server.connected, server.failed)
    assert isinstance(kc, HandshakeCompleted) and isinstance(ks, HandshakeCompleted)
    assert kc.keys.suite == ks.keys.suite == suite
    await exchange_srtp(client, kc, server, ks)
    client.endpoint.close()
    server.endpoint.close()


async def test_lost_first_flight_is_retransmitted() -> None:
    ia, ib = identity(), identity()
    server = await ours(ib, "server", [("sha-256", ia.fingerprint())])
    client = await ours(ia, "client", [("sha-256", ib.fingerprint())], remote=server.addr)
    assert server.endpoint and client.endpoint and client.connected and client.failed
    client.drop_first = 1  # the ClientHello never arrives
    server.endpoint.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    client.endpoint.start()
    kc = await first(client.connected, client.failed)
    assert isinstance(kc, HandshakeCompleted)
    assert 0.5 < loop.time() - started < 5.0  # OpenSSL's 1 s retransmission timer fired


@pytest.mark.parametrize("we_are", ["client", "server"])
async def test_baresip_like_rsa_peer(we_are: str) -> None:
    peer = BaresipLikePeer("server" if we_are == "client" else "client")
    ia = identity()
    try:
        me = await ours(ia, we_are, [("SHA-256", peer.fingerprint())], remote=peer.addr)
        assert me.endpoint and me.connected and me.failed
        me.endpoint.start()
        thread = asyncio.create_task(asyncio.to_thread(peer.handshake, me.addr))
        event = await first(me.connected, me.failed)
        await thread
        assert peer.error is None
        assert isinstance(event, HandshakeCompleted)
        assert event.cipher == ("ECDHE-RSA-AES256-GCM-SHA384" if we_are == "client"
                                else "ECDHE-ECDSA-AES256-GCM-SHA384")
        assert event.keys.suite == "AES_CM_128_HMAC_SHA1_80"
        assert peer.peer_cert is not None and fingerprint_of(peer.peer_cert, hashes.SHA256()) \
            == ia.fingerprint()
        assert peer.tx is not None and peer.rx is not None
        # peer -> us
        peer.sock.sendto(peer.tx.protect(RTP), me.addr)
        packet = await asyncio.wait_for(me.media.get(), 2.0)
        assert srtp_session(event.keys.rx, SHA1_80, False).unprotect(packet) == RTP
        # us -> peer
        assert me.transport is not None
        me.transport.sendto(srtp_session(event.keys.tx, SHA1_80, True).protect(RTP), peer.addr)
        peer.sock.settimeout(2.0)
        data, _ = await asyncio.to_thread(peer.sock.recvfrom, 2048)
        assert peer.rx.unprotect(data) == RTP
    finally:
        peer.close()


@pytest.mark.parametrize("accept_sha1", [True, False])
async def test_sha1_fingerprint_per_config(accept_sha1: bool) -> None:
    peer = BaresipLikePeer("server")
    try:
        me = await ours(identity(), "client", [("SHA-1", peer.fingerprint(hashes.SHA1()))],
                        remote=peer.addr, accept_sha1=accept_sha1)
        assert me.endpoint and me.connected and me.failed
        me.endpoint.start()
        thread = asyncio.create_task(asyncio.to_thread(peer.handshake, me.addr, 3.0))
        event = await first(me.connected, me.failed)
        await thread
        if accept_sha1:
            assert isinstance(event, HandshakeCompleted)
        else:
            assert event == "fingerprint-sha1-refused"
            assert peer.error is not None and "alert" in peer.error
    finally:
        peer.close()


async def test_fingerprint_mismatch_is_a_security_event(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    peer = BaresipLikePeer("client")
    try:
        wrong = identity().fingerprint()
        me = await ours(identity(), "server", [("sha-256", wrong)], remote=peer.addr)
        assert me.endpoint and me.connected and me.failed
        with caplog.at_level(logging.WARNING, logger="srtpgw.security"):
            me.endpoint.start()
            thread = asyncio.create_task(asyncio.to_thread(peer.handshake, me.addr, 3.0))
            event = await first(me.connected, me.failed)
            await thread
        assert event == "fingerprint-mismatch"
        assert peer.tx is None  # the peer never got keys either: we alerted
        records = [r for r in caplog.records if r.name == "srtpgw.security"]
        assert [r.getMessage() for r in records] == ["dtls.failed"]
        assert records[0].fields["reason"] == "fingerprint-mismatch"  # type: ignore[attr-defined]
    finally:
        peer.close()


async def test_handshake_timeout_is_a_security_event(caplog: pytest.LogCaptureFixture) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((LOOP, 0))
    try:
        me = await ours(identity(), "client", [("sha-256", identity().fingerprint())],
                        remote=silent.getsockname(), handshake_timeout=0.6)
        assert me.endpoint and me.connected and me.failed
        loop = asyncio.get_running_loop()
        with caplog.at_level(logging.WARNING, logger="srtpgw.security"):
            started = loop.time()
            me.endpoint.start()
            event = await first(me.connected, me.failed, timeout=3.0)
        assert event == "handshake-timeout"
        assert 0.55 < loop.time() - started < 2.0
        assert any(r.getMessage() == "dtls.failed" for r in caplog.records)
        silent.settimeout(0.1)
        hello, _ = silent.recvfrom(2048)
        assert hello[0] == 22  # it did try
    finally:
        silent.close()


async def test_no_keys_before_late_fingerprint() -> None:
    """A server whose answer (fingerprint) is late hands out no keys until it arrives."""
    ia, ib = identity(), identity()
    server = await ours(ib, "server", [])
    client = await ours(ia, "client", [("sha-256", ib.fingerprint())], remote=server.addr)
    assert server.endpoint and client.endpoint and server.connected and client.connected
    server.endpoint.start()
    client.endpoint.start()
    assert isinstance(await first(client.connected, client.failed), HandshakeCompleted)
    await asyncio.sleep(0.1)
    assert not server.connected.done() and server.endpoint.session.state == "verifying"
    server.endpoint.set_remote_fingerprints([("sha-256", ia.fingerprint())])
    assert isinstance(server.connected.result(), HandshakeCompleted)
