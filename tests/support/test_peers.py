"""Self-test of the test peers, with no gateway in between: if these fail, every integration
test that uses them is meaningless."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from tests.support.certs import GATEWAY_NAME, client_context, make_test_pki, server_context
from tests.support.net import free_port, free_port_pair
from tests.support.phone import answerer, apply_answer, sdes_offer
from tests.support.rtp import RtpEndpoint, pattern_index, pattern_payload
from tests.support.sdes import SUITES, SdesKey, answer_sdp, make_sdp, parse_media
from tests.support.sip_ua import SipTestUA
from tests.support.sipmsg import StreamFramer, parse_message
from tests.support.tone import (
    detect_tone,
    dominant,
    pcmu_to_samples,
    read_wav,
    tone_frames,
    ulaw_decode,
    ulaw_encode,
    write_tone_wav,
)

# --------------------------------------------------------------------------- media


async def _pair(rtcp_mux: bool = True) -> tuple[RtpEndpoint, RtpEndpoint]:
    a = await RtpEndpoint.open(rtcp_mux=rtcp_mux)
    b = await RtpEndpoint.open(rtcp_mux=rtcp_mux)
    a.set_remote(b.addr, b.rtcp_addr)
    b.set_remote(a.addr, a.rtcp_addr)
    return a, b


@pytest.mark.parametrize("suite", sorted(SUITES))
async def test_two_endpoints_talk_srtp(suite: str) -> None:
    a, b = await _pair()
    try:
        ka, kb = SdesKey.generate(suite), SdesKey.generate(suite)
        a.set_keys(tx=ka, rx=kb)
        b.set_keys(tx=kb, rx=ka)
        b.set_tone(1400)
        wire = a.send()
        assert wire[12:] != b""  # protected payload differs from the tone frame
        await asyncio.gather(a.send_stream(24, 0.002), b.send_stream(25, 0.002))
        await b.wait_for_packets(25)
        await a.wait_for_packets(25)
        assert detect_tone(b.payloads(), 1000) and detect_tone(a.payloads(), 1400)
        seqs = [p.seq for p in b.received]
        assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
        assert {p.ssrc for p in b.received} == {a.ssrc}
        assert b.auth_failures == a.auth_failures == 0
    finally:
        a.close()
        b.close()


async def test_wrong_key_rekey_and_ssrc_change() -> None:
    a, b = await _pair()
    try:
        k1, k2 = SdesKey.generate(), SdesKey.generate()
        a.set_keys(tx=k1)
        b.set_keys(rx=k2)
        for _ in range(5):
            a.send()
        async with asyncio.timeout(5):
            while b.auth_failures < 5:
                await asyncio.sleep(0.01)
        assert b.received == []
        b.set_keys(rx=k1)
        await a.send_stream(3, 0.001, payload=pattern_payload)
        await b.wait_for_packets(3)
        assert b.pattern_indices() == [0, 1, 2] and pattern_index(b"\x00" * 160) is None
        b.clear()
        old_ssrc = a.ssrc
        a.send()
        await b.wait_for_packets(1)
        new_ssrc = a.change_ssrc()
        a.set_keys(tx=k2)
        b.set_keys(rx=k2)
        a.send()
        await b.wait_for_packets(2)
        assert [p.ssrc for p in b.received] == [old_ssrc, new_ssrc]
        b.send_raw(b"\x80\x00garbage", a.addr)
        b.send_raw(b"\x00" * 40, a.addr)  # RTP version 0
        async with asyncio.timeout(5):
            while a.undecodable < 2:
                await asyncio.sleep(0.01)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mux", [True, False])
async def test_rtcp_plain_and_srtcp(mux: bool) -> None:
    a, b = await _pair(rtcp_mux=mux)
    try:
        if not mux:
            assert a.rtcp_addr[1] == a.port + 1
        a.send_rtcp()
        await b.wait_for_rtcp(1)
        k = SdesKey.generate()
        a.set_keys(tx=k)
        b.set_keys(rx=k)
        a.send_rtcp()
        await b.wait_for_rtcp(2)
        assert all(data[1] == 200 for data, _ in b.rtcp_received)
    finally:
        a.close()
        b.close()


def test_tone_helpers(tmp_path: Path) -> None:
    assert all(abs(ulaw_decode(ulaw_encode(x)) - x) <= max(16, abs(x) // 15)
               for x in range(-32000, 32000, 97))
    frames = list(itertools.islice(tone_frames(697), 10))
    assert detect_tone(frames, 697) and not detect_tone(frames, 1209)
    assert dominant(pcmu_to_samples(frames), [697, 770, 1209]) == 697
    assert dominant([0] * 160, [697]) is None
    wav = write_tone_wav(tmp_path / "t.wav", 440, 0.5)
    assert dominant(read_wav(wav), [440, 1000]) == 440


def test_ports_and_sdp_helpers() -> None:
    assert 0 < free_port() < 65536 and 0 < free_port("tcp") < 65536
    assert free_port_pair() % 2 == 0
    keys = [SdesKey.generate("AEAD_AES_256_GCM"), SdesKey.generate()]
    offer = make_sdp("127.0.0.1", 4000, keys=keys, rtcp_mux=True, direction="sendonly")
    (media,) = parse_media(offer)
    assert media.proto == "RTP/SAVP" and media.rtcp_mux and media.direction == "sendonly"
    assert [(t, k) for t, k in media.cryptos] == [(1, keys[0]), (2, keys[1])]
    assert "inline" not in repr(media) and keys[0].key.hex() not in repr(keys)
    ans = answer_sdp(offer, "127.0.0.1", 5000, suites=("AES_CM_128_HMAC_SHA1_80",))
    assert ans.rx == keys[1] and ans.tx is not None and ans.remote == ("127.0.0.1", 4000)
    (back,) = parse_media(ans.sdp)
    assert back.cryptos == [(2, ans.tx)] and back.direction == "recvonly"
    with pytest.raises(ValueError):
        answer_sdp(offer, "127.0.0.1", 5000, suites=("AEAD_AES_128_GCM",))


# --------------------------------------------------------------------------- SIP parser


def test_sip_parser_is_tolerant_and_frames_streams() -> None:
    raw = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
           b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n"
           b"Via: SIP/2.0/TCP 192.0.2.2;branch=z9hG4bKdef, SIP/2.0/UDP 192.0.2.3\r\n"
           b"f: \"Alice, A.\" <sip:alice@example.com;x=y>;tag=1234\r\n"
           b"t: <sip:bob@example.com>\r\ni: abc@host\r\nCSeq: 7 INVITE\r\n"
           b"Subject: folded\r\n  line\r\nc: application/sdp\r\nl: 4\r\n\r\nv=0\r\nextra")
    msg = parse_message(raw)
    assert msg.is_request and msg.method == "INVITE" and msg.uri == "sip:bob@example.com"
    assert len(msg.header_all("via")) == 3 and msg.branch == "z9hG4bKabc"
    assert msg.from_tag == "1234" and msg.to_tag is None and msg.call_id == "abc@host"
    assert msg.cseq == (7, "INVITE") and msg.header("subject") == "folded line"
    assert msg.body == b"v=0\r" and msg.content_type == "application/sdp"
    framer = StreamFramer()
    one = parse_message(b"SIP/2.0 200 OK\r\nCSeq: 1 BYE\r\n\r\n").to_bytes()
    out = framer.feed(b"\r\n\r\n" + one + one[:10])
    assert len(out) == 1 and framer.keepalives == 2
    assert framer.feed(one[10:]) == [one]
    assert parse_message(one).status == 200 and parse_message(one).method == "BYE"


# --------------------------------------------------------------------------- SIP calls


async def _call_flow(caller: SipTestUA, callee: SipTestUA) -> None:
    """INVITE(SDES offer)/100/180/200/ACK, media both ways, re-INVITE with new keys,
    OPTIONS/INFO/UPDATE, then BYE/200."""
    ep_a, ep_b = await RtpEndpoint.open(), await RtpEndpoint.open()
    try:
        callee.uas.answer = answerer(ep_b)
        offer, keys = sdes_offer(ep_a, ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"))
        call = await caller.invite(f"sip:bob@{callee.host}", callee.local, offer)
        final = await call.wait_final()
        assert final.status == 200 and call.state == "confirmed"
        assert [r.status for r in call.responses] == [100, 180, 200]
        incoming = await callee.wait_call()
        await incoming.wait_ack()
        assert incoming.state == "confirmed" and incoming.remote_tag == call.local_tag
        apply_answer(ep_a, final.body, keys)
        assert ep_a.tx_key == keys[0] and ep_b.rx_key == keys[0]
        await asyncio.gather(ep_a.send_stream(10, 0.002), ep_b.send_stream(10, 0.002))
        await ep_a.wait_for_packets(10)
        await ep_b.wait_for_packets(10)
        assert ep_a.auth_failures == ep_b.auth_failures == 0

        offer2, keys2 = sdes_offer(ep_a, ("AES_CM_128_HMAC_SHA1_32",))
        re = await call.reinvite(offer2)
        assert re.status == 200
        await incoming.wait_request("ACK", count=2)
        apply_answer(ep_a, re.body, keys2)
        assert ep_b.rx_key == keys2[0]
        ep_a.send()
        await ep_b.wait_for_packets(11)

        assert (await call.request("INFO", "Signal=1\r\n", "application/dtmf-relay")).status \
            == 200
        assert (await call.request("OPTIONS")).status == 200
        assert (await incoming.request("UPDATE")).status == 200
        assert (await caller.options(f"sip:bob@{callee.host}", callee.local)).status == 200

        bye = await call.bye()
        assert bye.status == 200
        await incoming.wait_state("terminated")
        assert [r.method for r in incoming.requests] == [
            "ACK", "INVITE", "ACK", "INFO", "OPTIONS", "BYE"]
        assert all(m.call_id == call.call_id for m in callee.requests() if m.method != "OPTIONS")
    finally:
        ep_a.close()
        ep_b.close()


async def test_udp_call() -> None:
    caller = await SipTestUA.start("udp", user="alice")
    callee = await SipTestUA.start("udp", user="bob")
    try:
        await _call_flow(caller, callee)
    finally:
        await caller.close()
        await callee.close()


async def test_tcp_call() -> None:
    caller = await SipTestUA.start("tcp", user="alice")
    callee = await SipTestUA.start("tcp", user="bob")
    try:
        await _call_flow(caller, callee)
        assert "transport=tcp" in callee.requests("INVITE")[0].header("contact")
    finally:
        await caller.close()
        await callee.close()


async def test_tls_call_with_mutual_certificates(tmp_path: Path) -> None:
    make_test_pki(tmp_path)
    callee = await SipTestUA.start("tls", user="bob",
                                   tls_server=server_context(tmp_path, "gateway",
                                                             require_client_cert=True))
    caller = await SipTestUA.start("tls", user="alice",
                                   tls_server=server_context(tmp_path, "peer"),
                                   tls_client=client_context(tmp_path, "peer"),
                                   server_name=GATEWAY_NAME)
    try:
        await _call_flow(caller, callee)
        cert = caller.tls_peer_cert(callee.local)
        assert cert is not None and ("DNS", GATEWAY_NAME) in cert["subjectAltName"]
        assert len(callee._conns) == 1  # one connection, reused both ways
    finally:
        await caller.close()
        await callee.close()


async def test_tls_client_refuses_wrong_server_name(tmp_path: Path) -> None:
    make_test_pki(tmp_path)
    callee = await SipTestUA.start("tls", tls_server=server_context(tmp_path, "gateway"))
    caller = await SipTestUA.start("tls", tls_server=server_context(tmp_path, "peer"),
                                   tls_client=client_context(tmp_path, None),
                                   server_name="wrong.example")
    try:
        call = await caller.invite("sip:bob@x", callee.local, make_sdp("127.0.0.1", 4000))
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await call.wait_final()
        assert callee.received == [] and len(caller.connect_errors) == 1
    finally:
        await caller.close()
        await callee.close()


async def test_reject_and_cancel_flows() -> None:
    caller = await SipTestUA.start("udp")
    callee = await SipTestUA.start("udp")
    try:
        callee.uas.invite_statuses = (486,)
        call = await caller.invite("sip:bob@x", callee.local, make_sdp("127.0.0.1", 4000))
        assert (await call.wait_final()).status == 486
        await callee.wait_for(lambda m: m.method == "ACK")
        assert call.state == "terminated"

        callee.uas.invite_statuses = (180, 200)
        callee.uas.delay = 30
        call = await caller.invite("sip:bob@x", callee.local)
        await call.wait_response(180)
        assert call.state == "early"
        assert (await call.cancel()).status == 200
        assert (await call.wait_final()).status == 487
        incoming = next(d for d in callee.dialogs if d.call_id == call.call_id)
        await incoming.wait_state("terminated")
        await callee.wait_for(lambda m: m.method == "ACK" and m.call_id == call.call_id)

        assert (await caller.request("BYE", "sip:bob@x", callee.local, headers=[
            ("X-Test", "1")])).status == 200  # out of dialog: no To tag, answered 200
        callee.uas.delay = 0
        call = await caller.invite("sip:bob@x", callee.local, wait=True)
        call.remote_tag = "not-the-callee-tag"
        assert (await call.request("INFO")).status == 481
    finally:
        await caller.close()
        await callee.close()


async def test_udp_request_is_retransmitted_until_answered() -> None:
    silent = await RtpEndpoint.open()  # a UDP socket that never answers SIP
    caller = await SipTestUA.start("udp")
    try:
        call = await caller.invite("sip:bob@x", silent.addr, "")
        async with asyncio.timeout(5):
            while len(silent.received) + silent.undecodable < 3:
                await asyncio.sleep(0.05)
        assert silent.undecodable >= 3  # INVITE sent at 0, 0.5 and 1.5 s
        assert call.state == "calling"
    finally:
        await caller.close()
        silent.close()
