"""Issue 13's dialog and transaction defects against a real gateway (real sockets, real TLS):
foreign From-tags, CANCELs from another trunk, Max-Forwards across the legs, and the Allow and
Supported each leg sees."""

from __future__ import annotations

import pytest

from tests.integration.test_calls import DOMAIN, Rig, establish, rig
from tests.support.phone import answerer, plain_offer
from tests.support.sipmsg import SipMessage

__all__ = ["rig"]


async def test_bye_with_a_wrong_from_tag_is_481_and_the_call_lives(rig: Rig) -> None:
    """Item 15: our To-tag and the right Call-ID, but another From-tag: not this dialog."""
    call, incoming, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    forged = call._in_dialog("BYE", cseq=999)
    forged.set("From", f"<{call.local_uri}>;tag=not-{call.local_tag}")
    rig.pbx._send(forged, rig.udp)
    reply = await rig.pbx.wait_for(lambda m: not m.is_request and m.call_id == call.call_id
                                   and m.method == "BYE", 2)
    assert reply.status == 481
    forged = incoming._in_dialog("BYE", cseq=999)   # the same from the TLS side
    forged.set("From", f"<{incoming.local_uri}>;tag=x{incoming.local_tag}")
    rig.carrier._send(forged, rig.tls)
    reply = await rig.carrier.wait_for(lambda m: not m.is_request
                                       and m.call_id == incoming.call_id
                                       and m.method == "BYE", 2)
    assert reply.status == 481
    assert len(rig.gw.calls) == 1 and incoming.state == "confirmed"
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


async def test_cancel_over_another_trunk_is_481_and_the_invite_rings_on(rig: Rig) -> None:
    """Item 14: the PBX's UDP INVITE, CANCELled over the carrier's TLS trunk with its exact
    branch, Via and tags: 481 there; the PBX's own CANCEL still works afterwards."""
    ep, callee_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(callee_ep)
    rig.carrier.uas.delay = 5.0
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(ep))
    await call.wait_response(180, 5)
    incoming = await rig.carrier.wait_call(2)
    inv = call.invite
    assert inv is not None
    forged = SipMessage(f"CANCEL {inv.uri} SIP/2.0")
    for name in ("Via", "From", "To", "Call-ID"):
        forged.add(name, inv.header_all(name)[0])
    forged.add("CSeq", f"{inv.cseq[0]} CANCEL").add("Max-Forwards", "70")
    assert (await rig.carrier._transact(forged, rig.tls, None, 3)).status == 481
    # another UDP trunk, same branch and sent-by
    assert (await rig.pbx2._transact(forged, rig.addr("udp2"), None, 3)).status == 481
    assert incoming.state != "terminated" and len(rig.gw.calls) == 1
    assert (await call.cancel(3)).status == 200
    assert (await call.wait_final(3)).status == 487
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("rig", [{"trunks": {"pbx": {"answer_options": False}}}],
                         indirect=True)
async def test_max_forwards_counts_down_across_the_legs(rig: Rig) -> None:
    """Item 12 (RFC 7332 §3): each leg gets the received Max-Forwards minus one, so a loop
    through gateways ends; 0 is answered 483 (OPTIONS: by us, never relayed)."""
    a_ep, b_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(b_ep)
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(a_ep),
                                max_forwards=10)
    assert (await call.wait_final(5)).status == 200
    incoming = await rig.carrier.wait_call(2)
    assert incoming.invite is not None and incoming.invite.header("Max-Forwards") == "9"
    await incoming.wait_ack(2)
    incoming.local_cseq += 1
    info = incoming._in_dialog("INFO", incoming.local_cseq)
    info.set("Max-Forwards", "5")
    assert (await rig.carrier._transact(info, incoming.peer, incoming, 3)).status == 200
    assert (await call.wait_request("INFO", 2)).header("Max-Forwards") == "4"
    info = incoming._in_dialog("INFO", incoming.local_cseq + 1)
    info.set("Max-Forwards", "0")
    assert (await rig.carrier._transact(info, incoming.peer, incoming, 3)).status == 483
    await call.bye(3)
    dead = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(a_ep),
                                max_forwards=0)
    assert (await dead.wait_final(5)).status == 483
    assert (await rig.pbx.options(f"sip:100@{DOMAIN}", rig.udp, max_forwards=0)).status == 200
    assert rig.carrier.requests("OPTIONS") == []
    await rig.pbx.options(f"sip:100@{DOMAIN}", rig.udp, max_forwards=3)
    assert [r.header("Max-Forwards") for r in rig.carrier.requests("OPTIONS")] == ["2"]
    await rig.settle()
    rig.assert_clean()


HANDLED = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, NOTIFY"  # default trunk methods


async def test_options_allow_lists_exactly_what_is_handled(rig: Rig) -> None:
    """Item 6: no MESSAGE (405 on these trunks), PRACK (no 100rel) or REFER (405) in Allow;
    every method listed is answered by the gateway or relayed."""
    resp = await rig.pbx.options(f"sip:100@{DOMAIN}", rig.udp)
    assert resp.status == 200 and resp.header_all("Allow") == HANDLED.split(", ")
    assert resp.header("Supported") is None
    call, _, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    for method in ("MESSAGE", "REFER", "PRACK"):
        refused = await call.request(method, "x", "text/plain")
        assert refused.status in (405, 481) and method not in (refused.header_all("Allow"))
    assert (await call.request("INFO", "Signal=1\r\n", "application/dtmf-relay")).status == 200
    assert (await call.request("NOTIFY", "x", "text/plain",
                               [("Event", "talk")])).status == 200
    in_dialog = await call.request("OPTIONS")
    assert in_dialog.header_all("Allow") == HANDLED.split(", ")
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


async def test_allow_and_supported_do_not_cross_the_gateway(rig: Rig) -> None:
    """Item 7: the caller's and the callee's Allow/Supported stay on their leg; each leg sees
    the gateway's own Allow (and no Supported: it implements no option tag yet)."""
    a_ep, b_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(b_ep)
    rig.carrier.uas.extra_headers = (("Supported", "replaces, norefersub, x-callee"),
                                     ("Allow", "INVITE, ACK, BYE, REFER, SUBSCRIBE"))
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(a_ep),
                                headers=[("Supported", "replaces, timer, x-caller")])
    final = await call.wait_final(5)
    incoming = await rig.carrier.wait_call(2)
    assert incoming.invite is not None
    assert incoming.invite.header_all("Allow") == HANDLED.split(", ")
    assert not incoming.invite.has("Supported")
    assert final.status == 200 and final.header_all("Allow") == HANDLED.split(", ")
    assert not final.has("Supported")
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()
