"""A call from the legacy PBX (plain RTP) to a DTLS-SRTP peer through the gateway: the
gateway offers UDP/TLS/RTP/SAVP with its fingerprint and ``actpass``; the peer (an independent
OpenSSL DTLS stack with a baresip-like RSA/sha1 certificate) answers ``active``, runs the
handshake against the gateway's media port, and media flows both ways, SRTP on its side."""

from __future__ import annotations

import asyncio
import dataclasses
import struct

import pytest

from tests.integration.test_calls import DOMAIN, Rig, rig
from tests.support.dtls_peer import BaresipLikePeer, dtls_answer, handshaking_answerer
from tests.support.phone import answerer, apply_answer, plain_offer
from tests.support.rtp import RtpEndpoint, pattern_payload
from tests.support.sdes import MediaInfo, parse_media

__all__ = ["rig"]


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xD71500) + pattern_payload(seq)


@pytest.mark.parametrize("rig", [{"trunks": {"carrier2": {"media": "dtls-srtp"}}}],
                         indirect=True)
async def test_plain_rtp_to_dtls_srtp_both_ways(rig: Rig) -> None:
    peer = BaresipLikePeer("client")

    def check(offered: MediaInfo) -> None:
        assert offered.proto == "UDP/TLS/RTP/SAVP"
        assert "setup:actpass" in offered.attributes
        assert any(a.startswith("fingerprint:sha-256 ") for a in offered.attributes)
        assert not offered.cryptos

    rig.carrier2.uas.answer, handshake = handshaking_answerer(peer, check)
    pbx_ep = await RtpEndpoint.open()
    try:
        call = await rig.pbx.invite(f"sip:8100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
        final = await call.wait_final(5)
        assert final.status == 200
        apply_answer(pbx_ep, final.body)
        await asyncio.wait_for(handshake[0], 8)
        assert peer.error is None and peer.rx is not None and peer.tx is not None

        gw_side = parse_media(final.body)[0]
        assert gw_side.proto == "RTP/AVP"
        # plain -> DTLS-SRTP: the peer decrypts with the keys its handshake exported
        peer.sock.settimeout(0.2)
        got: list[bytes] = []

        def receive(count: int) -> None:
            while len(got) < count:
                data = peer.sock.recvfrom(4096)[0]
                if data[0] >= 128:
                    got.append(peer.rx.unprotect(data)[12:])

        reader = asyncio.ensure_future(asyncio.to_thread(receive, 10))
        for _ in range(40):
            pbx_ep.send(pattern_payload(len(got)))
            await asyncio.sleep(0.01)
            if reader.done():
                break
        await asyncio.wait_for(reader, 3)
        assert len(got) >= 10
        # DTLS-SRTP -> plain
        incoming_addr = parse_media(
            rig.carrier2.requests("INVITE")[0].body)[0].addr
        for seq in range(10):
            peer.sock.sendto(peer.tx.protect(rtp(seq)), incoming_addr)
        await pbx_ep.wait_for_packets(10, 3)
        assert pbx_ep.pattern_indices()[:10] == list(range(10))

        # hold and resume keep the DTLS association: same tls-id, our settled role, no new
        # handshake, and the peer's keys still work afterwards
        first = parse_media(rig.carrier2.requests("INVITE")[0].body)[0]
        rig.carrier2.uas.reinvite_answer = lambda invite: dtls_answer(peer, "active")
        held = await call.reinvite(plain_offer(pbx_ep, direction="sendonly"))
        assert held.status == 200
        resumed = await call.reinvite(plain_offer(pbx_ep))
        assert resumed.status == 200
        reoffers = [parse_media(r.body)[0] for r in rig.carrier2.requests("INVITE")[1:]]
        tls_id = [a for a in first.attributes if a.startswith("tls-id:")]
        for m in reoffers:
            assert "setup:passive" in m.attributes
            assert [a for a in m.attributes if a.startswith("tls-id:")] == tls_id
        pbx_ep.clear()
        for seq in range(10, 20):
            peer.sock.sendto(peer.tx.protect(rtp(seq)), incoming_addr)
        await pbx_ep.wait_for_packets(10, 3)
        assert pbx_ep.pattern_indices()[:10] == list(range(10, 20))
        await call.bye(3)
        await rig.settle()
        rig.assert_clean()
    finally:
        pbx_ep.close()
        peer.close()


def dtls_offer(peer: BaresipLikePeer) -> str:
    host, port = peer.addr
    return "\r\n".join([
        "v=0", f"o=dtlspeer 2 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"a=fingerprint:SHA-256 {peer.fingerprint()}", "a=setup:actpass",
        f"m=audio {port} UDP/TLS/RTP/SAVPF 0", "a=rtpmap:0 PCMU/8000", "a=rtcp-mux", ""])


@pytest.mark.parametrize("rig", [{"trunks": {"carrier2": {"media": "dtls-srtp",
                                                          "route_to": "pbx"}}}],
                         indirect=True)
async def test_dtls_srtp_caller_to_plain_rtp(rig: Rig) -> None:
    peer = BaresipLikePeer("server")          # we answer actpass with active: we connect
    pbx_ep = await RtpEndpoint.open()
    rig.pbx.uas.answer = answerer(pbx_ep)
    try:
        call = await rig.carrier2.invite(f"sip:300@{DOMAIN}", rig.addr("tls2"), dtls_offer(peer))
        final = await call.wait_final(5)
        assert final.status == 200
        ours = parse_media(final.body)[0]
        assert ours.proto == "UDP/TLS/RTP/SAVPF" and "setup:active" in ours.attributes
        # the feedback profile stays on the DTLS leg: the PBX is offered plain RTP/AVP
        assert parse_media(rig.pbx.requests("INVITE")[0].body)[0].proto == "RTP/AVP"
        await asyncio.wait_for(asyncio.to_thread(peer.handshake, ours.addr), 8)
        assert peer.error is None and peer.tx is not None
        for seq in range(10):
            peer.sock.sendto(peer.tx.protect(rtp(seq)), ours.addr)
        await pbx_ep.wait_for_packets(10, 3)
        assert pbx_ep.pattern_indices()[:10] == list(range(10))
        peer.sock.settimeout(2.0)
        pbx_ep.send(pattern_payload(7))
        while True:
            data = (await asyncio.to_thread(peer.sock.recvfrom, 4096))[0]
            if data[0] >= 128:
                break
        assert peer.rx.unprotect(data)[12:] == pattern_payload(7)
        await call.bye(3)
        await rig.settle()
        rig.assert_clean()
    finally:
        pbx_ep.close()
        peer.close()


async def test_reload_turns_a_trunk_to_dtls_srtp(rig: Rig) -> None:
    cfg = rig.gw.config
    assert rig.gw.b2bua.dtls is None
    trunks = tuple(dataclasses.replace(t, media="dtls-srtp") if t.name == "carrier2" else t
                   for t in cfg.trunks)
    rig.gw.b2bua.reload(dataclasses.replace(cfg, trunks=trunks))
    assert rig.gw.b2bua.dtls is not None
    peer = BaresipLikePeer("client")
    rig.carrier2.uas.answer, handshake = handshaking_answerer(peer)
    pbx_ep = await RtpEndpoint.open()
    try:
        call = await rig.pbx.invite(f"sip:8100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
        assert (await call.wait_final(5)).status == 200
        await asyncio.wait_for(handshake[0], 8)
        assert peer.error is None and peer.tx is not None
        await call.bye(3)
        await rig.settle()
        rig.assert_clean()
    finally:
        pbx_ep.close()
        peer.close()
