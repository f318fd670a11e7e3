"""The media half of a call (gateway.b2bua.media.MediaBridge) against the real relay on loopback.

A plain-RTP endpoint and an SRTP endpoint (its own pylibsrtp keys) exchange packets through the
relay, set up only from the SDP the bridge produces; re-INVITE re-key keeps media flowing.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import pylibsrtp
import pytest

from gateway.b2bua.media import MediaBridge, leg_policy
from gateway.config import HostPort, MediaSection, Trunk
from gateway.media.api import generate_params
from gateway.media.relay import MediaRelay
from gateway.sdp import SdpError, format_crypto, parse_crypto, parse_sdp

PROFILES = {"AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
            "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
            "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM}


def trunk(name: str, media: str, transport: str = "udp", **kw) -> Trunk:
    return Trunk(name=name, side="secure" if media != "rtp" else "legacy", transport=transport,
                 peer=HostPort("127.0.0.1", 5070), listener=name, media=media, **kw)


class Endpoint:
    """A UDP RTP endpoint; with a suite it protects with its own key and unprotects the peer's."""

    def __init__(self, ssrc: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.ssrc = ssrc
        self.seq = 0
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.remote: tuple[str, int] | None = None

    def keys(self, suite: str, ours: bytes, theirs: bytes) -> None:
        self.tx = pylibsrtp.Session(pylibsrtp.Policy(
            key=ours, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILES[suite]))
        self.rx = pylibsrtp.Session(pylibsrtp.Policy(
            key=theirs, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=PROFILES[suite]))

    def send(self, payload: bytes) -> None:
        self.seq += 1
        pkt = struct.pack("!BBHII", 0x80, 0, self.seq, self.seq * 160, self.ssrc) + payload
        assert self.remote is not None
        self.sock.sendto(self.tx.protect(pkt) if self.tx else pkt, self.remote)

    async def recv(self, timeout: float = 2.0) -> bytes:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 2048), timeout)
        if self.rx is not None:
            data = self.rx.unprotect(data)
        return data[12:]

    def close(self) -> None:
        self.sock.close()


def plain_sdp(port: int, direction: str = "sendrecv") -> bytes:
    return (f"v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n").encode()


def srtp_sdp(port: int, cryptos: list[str], direction: str = "sendrecv") -> bytes:
    lines = "".join(f"a=crypto:{c}\r\n" for c in cryptos)
    return (f"v=0\r\no=peer 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
            f"{lines}").encode()


def media_addr(sdp: bytes) -> tuple[str, int]:
    d = parse_sdp(sdp)
    return (d.connection_for(d.media[0]).address, d.media[0].port)


async def flows(a: Endpoint, b: Endpoint, tag: bytes) -> None:
    a.send(b"a->b " + tag)
    assert await b.recv() == b"a->b " + tag
    b.send(b"b->a " + tag)
    assert await a.recv() == b"b->a " + tag


@pytest.fixture
async def relay(unused_udp_port_factory):
    base = unused_udp_port_factory() & ~1
    r = MediaRelay(MediaSection(port_min=20000 + base % 20000 // 100 * 100,
                                port_max=20000 + base % 20000 // 100 * 100 + 99))
    yield r
    await r.close()


async def test_rtp_to_srtp_and_rekey(relay):
    a, b = Endpoint(0x1111), Endpoint(0x2222)
    bridge = MediaBridge(relay, trunk("pbx", "rtp"),
                         trunk("carrier", "srtp", "tls", suites=("AEAD_AES_128_GCM",
                                                                 "AES_CM_128_HMAC_SHA1_80")),
                         "127.0.0.1")
    try:
        offer_b = await bridge.offer(0, plain_sdp(a.port))
        text = offer_b.decode()
        assert "RTP/SAVP" in text and "pbx" not in text
        cryptos = [parse_crypto(v) for v in parse_sdp(offer_b).media[0].get_all("crypto")]
        assert [c.suite for c in cryptos] == ["AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"]
        chosen = cryptos[1]
        mine = generate_params(chosen.suite)
        b.keys(chosen.suite, mine.key, chosen.material)
        b.remote = media_addr(offer_b)
        answer_a = await bridge.answer(srtp_sdp(b.port, [format_crypto(
            chosen.tag, chosen.suite, mine.key)]))
        assert b"crypto" not in answer_a and b"RTP/AVP" in answer_a
        a.remote = media_addr(answer_a)
        await flows(a, b, b"1")

        # the secure side re-keys with a new key and a new port in a re-INVITE
        b2 = Endpoint(0x3333)
        fresh = generate_params(chosen.suite)
        offer_a = await bridge.offer(1, srtp_sdp(b2.port, [format_crypto(
            1, chosen.suite, fresh.key)]))
        assert b"crypto" not in offer_a
        # our key towards B does not change: B's answer comes from the gateway's one key
        answer_b = await bridge.answer(plain_sdp(a.port))
        ours = parse_crypto(parse_sdp(answer_b).media[0].get("crypto"))
        assert ours.material == chosen.material and ours.tag == 1
        b2.keys(chosen.suite, fresh.key, ours.material)
        b2.remote = b.remote
        await flows(a, b2, b"2")
        b2.close()
    finally:
        await bridge.close()
        a.close()
        b.close()
    assert relay.totals().sessions_active == 0


async def test_srtp_to_srtp_independent_keys_hold_resume(relay):
    suite_a, suite_b = "AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"
    a, b = Endpoint(0xA), Endpoint(0xB)
    bridge = MediaBridge(relay, trunk("x", "srtp", "tls", suites=(suite_a,)),
                         trunk("y", "srtp", "tls", suites=(suite_b,)), "127.0.0.1")
    try:
        key_a = generate_params(suite_a)
        offer_b = await bridge.offer(0, srtp_sdp(a.port, [format_crypto(5, suite_a, key_a.key)]))
        c_b = parse_crypto(parse_sdp(offer_b).media[0].get("crypto"))
        assert c_b.suite == suite_b and c_b.material != key_a.key
        key_b = generate_params(suite_b)
        answer_a = await bridge.answer(srtp_sdp(b.port, [format_crypto(c_b.tag, suite_b,
                                                                       key_b.key)]))
        c_a = parse_crypto(parse_sdp(answer_a).media[0].get("crypto"))
        assert c_a.tag == 5 and c_a.suite == suite_a and c_a.material != key_b.key
        a.keys(suite_a, key_a.key, c_a.material)
        b.keys(suite_b, key_b.key, c_b.material)
        a.remote, b.remote = media_addr(answer_a), media_addr(offer_b)
        await flows(a, b, b"up")

        hold = await bridge.offer(0, srtp_sdp(a.port, [format_crypto(5, suite_a, key_a.key)],
                                              "sendonly"))
        assert b"a=sendonly" in hold
        answer = await bridge.answer(srtp_sdp(b.port, [format_crypto(c_b.tag, suite_b,
                                                                     key_b.key)], "recvonly"))
        assert b"a=recvonly" in answer
        resume = await bridge.offer(0, srtp_sdp(a.port, [format_crypto(5, suite_a, key_a.key)]))
        assert b"sendonly" not in resume
        await bridge.answer(srtp_sdp(b.port, [format_crypto(c_b.tag, suite_b, key_b.key)]))
        await flows(a, b, b"resumed")
    finally:
        await bridge.close()
        a.close()
        b.close()


async def test_no_acceptable_crypto_is_488_and_frees_ports(relay):
    bridge = MediaBridge(relay, trunk("x", "srtp", "tls", suites=("AEAD_AES_256_GCM",)),
                         trunk("y", "rtp"), "127.0.0.1")
    key = generate_params("AES_CM_128_HMAC_SHA1_80")
    with pytest.raises(SdpError) as err:
        await bridge.offer(0, srtp_sdp(4000, [format_crypto(1, key.suite, key.key)]))
    assert err.value.status == 488
    await bridge.close()
    assert relay.totals().sessions_active == 0


def test_sdes_over_udp_refused_unless_allowed():
    with pytest.raises(SdpError):
        leg_policy(trunk("x", "srtp", "udp"))
    assert leg_policy(trunk("x", "srtp", "udp", allow_sdes_over_insecure=True)).sdes
