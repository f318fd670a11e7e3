"""In-dialog requests through the gateway: UPDATE offers, offerless re-INVITE, OPTIONS relayed
when a trunk does not answer them itself, requests from the wrong trunk, DTLS hold/resume."""

from __future__ import annotations

import pytest

from tests.integration.test_calls import DOMAIN, Rig, establish, media_both_ways, rig
from tests.support.phone import apply_answer, plain_offer, sdes_offer
from tests.support.sdes import parse_media

__all__ = ["rig"]


async def test_update_with_offer_rekeys(rig: Rig) -> None:
    call, incoming, pbx_ep, car_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    offer, keys = sdes_offer(car_ep, ("AES_CM_128_HMAC_SHA1_80",))
    resp = await incoming.request("UPDATE", offer, "application/sdp")
    assert resp.status == 200 and resp.sdp
    apply_answer(car_ep, resp.body, keys)
    update = await call.wait_request("UPDATE", 2)
    assert "crypto" not in update.sdp
    await media_both_ways(pbx_ep, car_ep)
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


async def test_offerless_reinvite_is_answered_with_current_session(rig: Rig) -> None:
    call, incoming, pbx_ep, car_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    resp = await incoming.reinvite(None)
    assert resp.status == 200
    media = parse_media(resp.body)[0]
    assert media.proto == "RTP/SAVP" and len(media.cryptos) == 1
    assert rig.pbx.requests("INVITE") == []          # handled on the carrier's leg alone
    await media_both_ways(pbx_ep, car_ep)
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("rig", [{"trunks": {"pbx": {"answer_options": False}}}],
                         indirect=True)
async def test_options_relayed_when_not_answered_locally(rig: Rig) -> None:
    resp = await rig.pbx.options(f"sip:100@{DOMAIN}", rig.udp)
    assert resp.status == 200
    relayed = rig.carrier.requests("OPTIONS")
    assert len(relayed) == 1 and relayed[0].call_id != resp.call_id
    rig.carrier.uas.status_for["OPTIONS"] = 486
    assert (await rig.pbx.options(f"sip:100@{DOMAIN}", rig.udp)).status == 486


async def test_in_dialog_request_from_another_trunk_is_481(rig: Rig) -> None:
    call, incoming, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    # the second PBX replays the first PBX's dialog identifiers on its own listener
    forged = call._in_dialog("BYE", cseq=999)
    forged.set("Via", f"SIP/2.0/UDP 127.0.0.1:{rig.pbx2.port};branch=z9hG4bKforged1;rport")
    rig.pbx2._send(forged, rig.addr("udp2"))
    reply = await rig.pbx2.wait_for(lambda m: not m.is_request and m.call_id == call.call_id, 2)
    assert reply.status == 481
    assert len(rig.gw.calls) == 1 and incoming.state == "confirmed"
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("rig", [{"trunks": {"carrier": {"media": "srtp"}}}], indirect=True)
async def test_hold_resume_from_secure_side(rig: Rig) -> None:
    call, incoming, pbx_ep, car_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    offer, keys = sdes_offer(car_ep, ("AEAD_AES_256_GCM",), direction="sendonly")
    held = await incoming.reinvite(offer)
    assert held.status == 200 and "a=recvonly" in held.sdp
    assert "a=sendonly" in (await call.wait_request("INVITE", 2)).sdp
    offer, keys = sdes_offer(car_ep, ("AEAD_AES_256_GCM",))
    resumed = await incoming.reinvite(offer)
    apply_answer(car_ep, resumed.body, keys)
    await media_both_ways(pbx_ep, car_ep)
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


async def test_unknown_dialog_is_481(rig: Rig) -> None:
    resp = await rig.pbx.request("BYE", f"sip:100@{DOMAIN}", rig.udp)
    assert resp.status == 481


async def test_codec_change_reaches_the_other_side(rig: Rig) -> None:
    call, incoming, pbx_ep, car_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    resp = await call.reinvite(plain_offer(pbx_ep, payloads=(8, 101)))
    assert resp.status == 200
    reoffer = parse_media((await incoming.wait_request("INVITE", 2)).body)[0]
    assert reoffer.formats == ["8", "101"]
    assert parse_media(resp.body)[0].formats[0] == "8"
    await media_both_ways(pbx_ep, car_ep)
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("rig", [{"trunks": {"carrier": {"methods": [
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE"]}}}], indirect=True)
async def test_refer_and_methods_the_far_trunk_refuses_get_405(rig: Rig) -> None:
    call, _, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    refer = await call.request("REFER", headers=[("Refer-To", "<sip:200@pbx.internal>")])
    assert refer.status == 405
    info = await call.request("INFO", "Signal=1\r\n", "application/dtmf-relay")
    assert info.status == 405          # the carrier trunk does not take INFO
    assert rig.carrier.requests("REFER") == [] and rig.carrier.requests("INFO") == []
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()
