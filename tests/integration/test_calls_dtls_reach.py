"""DTLS-SRTP offers whose signalled address the relay cannot reach (RFC 5763 §5).

linphone on a dual-stack host offers ``c=IN IP6 <address>`` with ``a=setup:actpass`` while it
sends from 127.0.0.1. Answering ``active`` would send our ClientHello from the IPv4 socket to
the IPv6 address (every send fails, no media). On a trunk that learns addresses the gateway
answers ``passive`` instead; the peer's ClientHello then shows its real address, behind the
fingerprint check. An offer that can never be reached is refused: 488 with Warning 301.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from tests.integration.test_calls import DOMAIN, Rig, rig
from tests.support.dtls_peer import BaresipLikePeer
from tests.support.phone import answerer
from tests.support.rtp import RtpEndpoint, pattern_payload
from tests.support.sdes import parse_media

__all__ = ["rig"]

LEARNING = {"trunks": {"carrier2": {"media": "dtls-srtp", "route_to": "pbx",
                                    "nat_learning": True, "refusal_warnings": True}}}
STRICT = {"trunks": {"carrier2": {"media": "dtls-srtp", "route_to": "pbx",
                                  "refusal_warnings": True}}}
V6 = "2001:db8::5"   # documentation prefix: never sent to (we answer passive or refuse)


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xD71500) + pattern_payload(seq)


def offer(peer: BaresipLikePeer, setup: str = "actpass", host: str | None = None) -> str:
    host = host or peer.addr[0]
    kind = "IP6" if ":" in host else "IP4"
    return "\r\n".join([
        "v=0", f"o=linphone 2 1 IN {kind} {host}", "s=-", f"c=IN {kind} {host}", "t=0 0",
        f"a=fingerprint:SHA-256 {peer.fingerprint()}", f"a=setup:{setup}",
        f"m=audio {peer.addr[1]} UDP/TLS/RTP/SAVP 0", "a=rtpmap:0 PCMU/8000", "a=rtcp-mux", ""])


@pytest.mark.parametrize(("host", "rig"), [(V6, LEARNING), (None, LEARNING)],
                         indirect=["rig"], ids=["dual-stack-v6-offer", "v4-offer"])
async def test_actpass_on_a_learning_trunk_is_answered_passive(host: str | None,
                                                              rig: Rig) -> None:
    peer = BaresipLikePeer("client")          # we answer passive: the peer connects
    pbx_ep = await RtpEndpoint.open()
    rig.pbx.uas.answer = answerer(pbx_ep)
    try:
        call = await rig.carrier2.invite(f"sip:300@{DOMAIN}", rig.addr("tls2"),
                                         offer(peer, host=host))
        final = await call.wait_final(5)
        assert final.status == 200
        ours = parse_media(final.body)[0]
        assert "setup:passive" in ours.attributes
        await asyncio.wait_for(asyncio.to_thread(peer.handshake, ours.addr), 8)
        assert peer.error is None and peer.tx is not None and peer.rx is not None
        for seq in range(10):
            peer.sock.sendto(peer.tx.protect(rtp(seq)), ours.addr)
        await pbx_ep.wait_for_packets(10, 3)
        assert pbx_ep.pattern_indices()[:10] == list(range(10))
        # toward the phone: to the address its handshake came from, not the signalled one
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


@pytest.mark.parametrize(("setup", "rig"), [("actpass", STRICT), ("passive", LEARNING)],
                         indirect=["rig"], ids=["not-learning", "peer-wants-us-active"])
async def test_an_unreachable_offer_is_488_with_warning_301(setup: str, rig: Rig) -> None:
    peer = BaresipLikePeer("server")
    try:
        call = await rig.carrier2.invite(f"sip:300@{DOMAIN}", rig.addr("tls2"),
                                         offer(peer, setup, V6))
        final = await call.wait_final(5)
        assert final.status == 488
        warning = final.header("Warning") or ""
        assert warning.startswith("301 srtpgw ") and V6 not in warning, warning
        assert rig.pbx.requests("INVITE") == []
        await rig.settle()
        rig.assert_clean()
    finally:
        peer.close()


@pytest.mark.parametrize("rig", [{"trunks": {"carrier2": {"media": "dtls-srtp",
                                                          "route_to": "pbx"}}}], indirect=True)
async def test_without_refusal_warnings_the_488_says_nothing(rig: Rig) -> None:
    peer = BaresipLikePeer("server")
    try:
        call = await rig.carrier2.invite(f"sip:300@{DOMAIN}", rig.addr("tls2"),
                                         offer(peer, "actpass", V6))
        final = await call.wait_final(5)
        assert final.status == 488 and final.header("Warning") is None
        await rig.settle()
        rig.assert_clean()
    finally:
        peer.close()
