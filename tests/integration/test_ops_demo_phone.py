"""The demo's built-in phones, phone to phone over loopback: SIP/UDP + RTP and SIP/TLS + SRTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.ops.demo_phone import DemoPhone, client_context, server_context
from gateway.ops.keys import init_keys


async def run_call(caller: DemoPhone, callee: DemoPhone) -> None:
    caller.expect_peer_marker(callee.marker)
    callee.expect_peer_marker(caller.marker)
    await caller.start()
    await callee.start()
    try:
        status = await caller.call(("127.0.0.1", callee.sip_port),
                                   f"sip:{callee.name}@127.0.0.1:{callee.sip_port}")
        assert status == 200
        await asyncio.wait_for(callee.answered.wait(), 5)
        await asyncio.sleep(0.6)
        assert await caller.hangup() == 200
        await asyncio.wait_for(callee.ended.wait(), 5)
    finally:
        await caller.close()
        await callee.close()


async def test_plain_phones() -> None:
    a = DemoPhone("alice", b"ALICE-AUDIO-", transport="udp", media="rtp")
    b = DemoPhone("bob", b"BOB-AUDIO-", transport="udp", media="rtp")
    await run_call(a, b)
    for phone in (a, b):
        r = phone.report
        assert r.sent >= 20 and r.peer_audio_ok == r.received >= 20 and r.suite is None
        assert r.peer_marker_in_clear == r.received  # plain RTP: the marker is on the wire
    flow = [t.split()[:2] for t in a.trace if t.startswith(("->", "<-"))]
    assert flow[:4] == [["->", "INVITE"], ["<-", "100"], ["<-", "180"], ["<-", "200"]]
    assert "       m=audio" in "\n".join(a.trace) and "a=crypto" not in "\n".join(a.trace)
    assert "-> BYE" in " ".join(a.trace) and "<- BYE" in " ".join(b.trace)


@pytest.mark.parametrize("suite", ["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"])
async def test_srtp_phones_over_tls(tmp_path: Path, suite: str) -> None:
    keys = init_keys(tmp_path / "keys").dir
    k = {n: str(keys / n) for n in ("gateway.crt", "gateway.key", "peer.crt", "peer.key",
                                    "ca.crt")}
    callee = DemoPhone("carrier", b"SECURE-AUDIO-", transport="tls", media="srtp",
                       server_tls=server_context(k["gateway.crt"], k["gateway.key"],
                                                 k["ca.crt"]), suites=(suite,))
    caller = DemoPhone("peer", b"PEER-AUDIO-", transport="tls", media="srtp",
                       client_tls=client_context(k["peer.crt"], k["peer.key"], k["ca.crt"]))
    await run_call(caller, callee)
    for phone in (caller, callee):
        r = phone.report
        assert r.suite == suite
        assert r.received >= 20 and r.peer_audio_ok == r.received and r.auth_failures == 0
        assert r.peer_marker_in_clear == 0  # encrypted on the wire
        assert any("a=crypto:" in t and "inline:<redacted>" in t for t in phone.trace)


async def test_srtp_phone_refuses_plain_offer() -> None:
    callee = DemoPhone("carrier", b"S-", transport="udp", media="srtp")
    caller = DemoPhone("pbx", b"P-", transport="udp", media="rtp")
    await caller.start()
    await callee.start()
    try:
        status = await caller.call(("127.0.0.1", callee.sip_port),
                                   f"sip:carrier@127.0.0.1:{callee.sip_port}")
        assert status == 488
    finally:
        await caller.close()
        await callee.close()
