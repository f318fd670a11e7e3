"""Call failures and edge cases through the running gateway; after each one the gateway must
hold no call, dialog, transaction waiter or media session (``rig.assert_clean``)."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_calls import (
    DOMAIN,
    Rig,
    establish,
    media_both_ways,
    rig,
)
from tests.support.phone import answerer, apply_answer, plain_offer, sdes_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sip_ua import SipTestUA

__all__ = ["rig"]


async def finish(rig: Rig) -> None:
    await rig.settle()
    rig.assert_clean()


async def test_callee_rejects(rig: Rig) -> None:
    ep = await RtpEndpoint.open()
    rig.carrier.uas.invite_statuses = (180, 486)
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep))
    assert (await call.wait_response(180, 5)).status == 180
    assert (await call.wait_final(5)).status == 486
    await finish(rig)


async def test_cancel_before_answer(rig: Rig) -> None:
    ep, callee_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(callee_ep)
    rig.carrier.uas.invite_statuses = (180, 200)
    rig.carrier.uas.delay = 5.0
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep))
    await call.wait_response(180, 5)
    incoming = await rig.carrier.wait_call(2)
    assert (await call.cancel(3)).status == 200
    assert (await call.wait_final(3)).status == 487
    await incoming.wait_state("terminated", 3)
    assert rig.carrier.requests("CANCEL")
    await finish(rig)


async def test_early_media_then_answer(rig: Rig) -> None:
    pbx_ep, car_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(car_ep)
    rig.carrier.uas.invite_statuses = (183, 200)
    rig.carrier.uas.delay = 1.0
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
    early = await call.wait_response(183, 5)
    assert early.sdp and "crypto" not in early.sdp
    apply_answer(pbx_ep, early.body)
    await car_ep.send_stream(5, 0.002)
    await pbx_ep.wait_for_packets(5, 2)      # early media, callee -> caller
    final = await call.wait_final(5)
    assert final.status == 200
    apply_answer(pbx_ep, final.body)
    await media_both_ways(pbx_ep, car_ep)
    await call.bye(3)
    await finish(rig)


async def test_no_acceptable_crypto_is_488(rig: Rig) -> None:
    ep = await RtpEndpoint.open()
    offer, _ = sdes_offer(ep, ("AES_CM_128_HMAC_SHA1_32",))
    call = await rig.carrier.invite(f"sip:200@{DOMAIN}", rig.tls, offer)
    assert (await call.wait_final(5)).status == 488
    assert rig.pbx.requests("INVITE") == []
    await finish(rig)


async def test_require_100rel_is_420(rig: Rig) -> None:
    ep = await RtpEndpoint.open()
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep),
                                headers=[("Require", "100rel")])
    final = await call.wait_final(5)
    assert final.status == 420 and "100rel" in (final.header("Unsupported") or "")
    await finish(rig)


async def test_100rel_never_offered_to_callee(rig: Rig) -> None:
    call, incoming, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    supported = incoming.invite.header_all("Supported")
    assert all("100rel" not in s for s in supported)
    await call.bye(3)
    await finish(rig)


@pytest.mark.parametrize("rig", [{"trunks": {"pbx2": {"route_to": None}}}], indirect=True)
async def test_no_route_is_404(rig: Rig) -> None:
    ep = await RtpEndpoint.open()
    call = await rig.pbx2.invite(f"sip:100@{DOMAIN}", rig.addr("udp2"), plain_offer(ep))
    assert (await call.wait_final(5)).status == 404
    await finish(rig)


@pytest.mark.parametrize("rig", [{"trunks": {"pbx": {"max_calls": 1}}}], indirect=True)
async def test_max_calls_is_503_with_retry_after(rig: Rig) -> None:
    call, _, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    ep = await RtpEndpoint.open()
    second = await rig.pbx.invite(f"sip:101@{DOMAIN}", rig.udp, plain_offer(ep))
    final = await second.wait_final(5)
    assert final.status == 503 and final.header("Retry-After")
    await call.bye(3)
    await finish(rig)


@pytest.mark.parametrize("rig", [{"media_ports": 4}], indirect=True)
async def test_media_ports_exhausted_is_503(rig: Rig) -> None:
    call, _, a_ep, b_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    ep = await RtpEndpoint.open()
    second = await rig.pbx.invite(f"sip:101@{DOMAIN}", rig.udp, plain_offer(ep))
    assert (await second.wait_final(5)).status == 503
    await media_both_ways(a_ep, b_ep)        # the first call is unaffected
    await call.bye(3)
    await finish(rig)


@pytest.mark.parametrize("rig", [{"sip": {"t1": 0.03, "t2": 0.1}}], indirect=True)
async def test_destination_timeout_is_408(rig: Rig) -> None:
    await rig.pbx2.close()          # its UDP port now swallows the INVITE: no answer at all
    ep = await RtpEndpoint.open()
    call = await rig.pbx.invite(f"sip:9100@{DOMAIN}", rig.udp, plain_offer(ep))
    assert (await call.wait_final(6)).status == 408
    await finish(rig)


async def test_destination_unreachable_is_503(rig: Rig) -> None:
    await rig.carrier.close()       # nothing listens on the carrier's TLS port any more
    ep = await RtpEndpoint.open()
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep))
    assert (await call.wait_final(5)).status == 503
    await finish(rig)


async def test_unknown_source_is_dropped(rig: Rig) -> None:
    stranger = await SipTestUA.start("udp", "127.0.0.3", user="x")
    try:
        ep = await RtpEndpoint.open()
        call = await stranger.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep))
        with pytest.raises(TimeoutError):
            await call.wait_final(0.5)
        assert stranger.received == []
        assert rig.carrier.requests("INVITE") == []
    finally:
        await stranger.close()
    await finish(rig)


@pytest.mark.parametrize("rig", [{"firewall": {"unknown_source": "403"}}], indirect=True)
async def test_unknown_source_gets_403_when_configured(rig: Rig) -> None:
    stranger = await SipTestUA.start("udp", "127.0.0.3", user="x")
    try:
        ep = await RtpEndpoint.open()
        call = await stranger.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep))
        assert (await call.wait_final(3)).status == 403
        assert rig.carrier.requests("INVITE") == []
    finally:
        await stranger.close()
    await finish(rig)


async def test_options_answered_locally_and_info_relayed(rig: Rig) -> None:
    resp = await rig.pbx.options(f"sip:{DOMAIN}", rig.udp)
    assert resp.status == 200 and "INVITE" in (resp.header("Allow") or "")
    call, incoming, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    info = await call.request("INFO", "Signal=5\r\nDuration=160\r\n", "application/dtmf-relay")
    assert info.status == 200
    got = await incoming.wait_request("INFO", 2)
    assert got.body == b"Signal=5\r\nDuration=160\r\n"
    assert got.content_type == "application/dtmf-relay"
    rig.pbx.uas.status_for["INFO"] = 415
    assert (await incoming.request("INFO", "x", "text/plain")).status == 415
    await call.bye(3)
    await finish(rig)


async def test_glare_gets_491(rig: Rig) -> None:
    call, incoming, pbx_ep, car_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    offer, _ = sdes_offer(car_ep, ("AEAD_AES_256_GCM",))
    results = await asyncio.gather(call.reinvite(plain_offer(pbx_ep)), incoming.reinvite(offer))
    assert sorted(r.status for r in results) == [200, 491]
    await call.bye(3)
    await finish(rig)


@pytest.mark.parametrize("rig", [{"trunks": {"carrier": {"media_timeout": 1.0}}}],
                         indirect=True)
async def test_media_timeout_ends_call_on_both_legs(rig: Rig) -> None:
    call, incoming, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    await call.wait_request("BYE", 5)
    await incoming.wait_request("BYE", 2)
    await finish(rig)


async def test_session_expiry_sweep_ends_idle_calls(rig: Rig) -> None:
    call, incoming, a_ep, b_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    expires = rig.gw.config.sip.session_expires
    now = asyncio.get_running_loop().time()
    assert await rig.gw.b2bua.sweep(now) == []
    await asyncio.sleep(0.1)
    await media_both_ways(a_ep, b_ep)
    # signalling has been idle for longer than media: only the media keeps the call alive
    (only,) = rig.gw.calls.values()
    session = rig.gw.b2bua._media[only.id].session_id
    last = None
    for _ in range(60):   # the relay notes media activity on its inactivity tick
        stats = await rig.gw.relay.stats(session)
        last = max((s.last_packet or 0.0) for leg in stats.legs for s in leg)
        if last > only.last_activity + 0.05:
            break
        await asyncio.sleep(0.05)
    later = last + expires - 0.01
    assert later - only.last_activity > expires
    assert await rig.gw.b2bua.sweep(later) == []
    ended = await rig.gw.b2bua.sweep(later + expires + 1)
    assert len(ended) == 1
    await call.wait_request("BYE", 2)
    await incoming.wait_request("BYE", 2)
    await finish(rig)


async def test_endless_ringing_is_cancelled_with_408(rig: Rig) -> None:
    rig.gw.b2bua.ring_timeout = 0.5
    ep = await RtpEndpoint.open()
    rig.carrier.uas.invite_statuses = (180, 200)
    rig.carrier.uas.delay = 5.0
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep))
    await call.wait_response(180, 3)
    assert (await call.wait_final(3)).status == 408
    incoming = await rig.carrier.wait_call(1)
    await incoming.wait_state("terminated", 3)      # the callee got our CANCEL
    await finish(rig)


@pytest.mark.parametrize("rig", [{"trunks": {"carrier": {"media_timeout": 1.0},
                                             "pbx": {"end_call_on_media_timeout": False}}}],
                         indirect=True)
async def test_media_timeout_keeps_calls_of_a_trunk_that_opts_out(rig: Rig) -> None:
    call, _, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    await asyncio.sleep(2.0)
    assert len(rig.gw.calls) == 1 and call.state == "confirmed"
    await call.bye(3)
    await finish(rig)
