"""The test peers against a real phone (baresip, SDES): our SIP UA and RtpEndpoint must
interwork with it, and gateway.sdp must read its real SDP the same way the peers' own parser
does (two independent readings of one real-world body)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.sdp import parse_sdp
from gateway.sdp.offer_answer import LegPolicy, read_answer, read_offer
from tests.conftest import require_tool
from tests.interop.baresip import Softphone
from tests.interop.procs import Procs
from tests.support.certs import GATEWAY_NAME, client_context, make_test_pki, server_context
from tests.support.phone import answerer, apply_answer, sdes_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sdes import parse_media
from tests.support.sip_ua import SipTestUA
from tests.support.tone import detect_tone

pytestmark = pytest.mark.interop

SUITE = "AES_CM_128_HMAC_SHA1_80"
POLICY = LegPolicy("srtp", suites=(SUITE,), rtcp_mux=False)
PHONE_TONE = 1000.0
OUR_TONE = 440.0


async def _media_both_ways(ep: RtpEndpoint) -> None:
    ep.set_tone(OUR_TONE)
    sender = asyncio.ensure_future(ep.send_stream(100))
    try:
        await ep.wait_for_packets(60, timeout=10)
    finally:
        await sender
    assert ep.auth_failures == 0 and ep.replays == 0
    assert detect_tone(ep.payloads()[10:], PHONE_TONE), "baresip's tone did not arrive intact"


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_ua_calls_baresip_with_sdes(tmp_path: Path, transport: str) -> None:
    require_tool("baresip")
    procs = Procs(tmp_path)
    keys_dir = tmp_path / "keys"
    make_test_pki(keys_dir)
    server_pem = keys_dir / "gateway.pem"
    server_pem.write_bytes((keys_dir / "gateway.crt").read_bytes()
                           + (keys_dir / "gateway.key").read_bytes())
    tls = {"tls_server": server_context(keys_dir, "peer"),
           "tls_client": client_context(keys_dir, "peer"),
           "server_name": GATEWAY_NAME} if transport == "tls" else {}
    ua = await SipTestUA.start(transport, user="alice", **tls)
    ep = await RtpEndpoint.open(rtcp_mux=False)
    try:
        phone = Softphone("bob", tmp_path, address="127.0.0.1", tone_hz=PHONE_TONE,
                          mediaenc="srtp-mand", certificate=server_pem,
                          ca_file=keys_dir / "ca.crt")
        phone.start(procs, seconds=30)
        offer, keys = sdes_offer(ep, (SUITE,))
        port = phone.tls_port if transport == "tls" else phone.port
        call = await ua.invite(phone.uri(transport), (phone.address, port), offer)
        final = await call.wait_final(timeout=10)
        assert final.status == 200, final.start
        answer = final.body
        assert parse_sdp(answer).to_bytes() == answer.replace(b"\n", b"\r\n").replace(
            b"\r\r\n", b"\r\n")
        (stream,) = read_answer(parse_sdp(offer), answer, POLICY).streams
        media = apply_answer(ep, answer, keys)
        assert stream.rtp == media.addr and stream.suite == SUITE
        assert stream.remote_key.key == ep.rx_key.key and stream.local_key.key == keys[0].key
        await _media_both_ways(ep)
        assert (await call.bye()).status == 200
        if transport == "tls":
            cert = ua.tls_peer_cert((phone.address, port))
            assert cert is not None and ("DNS", GATEWAY_NAME) in cert["subjectAltName"]
    finally:
        await ua.close()
        ep.close()
        procs.close()
        print(procs.tails())


async def test_baresip_calls_ua_with_sdes(tmp_path: Path) -> None:
    require_tool("baresip")
    procs = Procs(tmp_path)
    ua = await SipTestUA.start("udp", user="alice")
    ep = await RtpEndpoint.open(rtcp_mux=False)
    try:
        ua.uas.answer = answerer(ep, suites=(SUITE,))
        phone = Softphone("bob", tmp_path, address="127.0.0.1", tone_hz=PHONE_TONE,
                          mediaenc="srtp-mand")
        phone.start(procs, seconds=30, dial=f"sip:alice@127.0.0.1:{ua.port}")
        incoming = await ua.wait_call(timeout=10)
        await incoming.wait_ack(timeout=10)
        offer = incoming.invite.body
        (stream,) = read_offer(offer, POLICY).streams
        (media,) = parse_media(offer)
        assert stream.rtp == media.addr and stream.crypto_tag is not None
        assert stream.remote_key.key == media.key_for_tag(stream.crypto_tag).key
        assert ep.rx_key == media.key_for_tag(stream.crypto_tag)
        await _media_both_ways(ep)
        assert (await incoming.bye()).status == 200
    finally:
        await ua.close()
        ep.close()
        procs.close()
        print(procs.tails())
