"""Callee behaviours a well-behaved phone never shows, from a scripted UDP peer: a 2xx that
crosses our CANCEL, and a forking proxy with several early dialogs. The peer is the second
legacy PBX (R-URI prefix 9), reached over the gateway's ``udp2`` listener."""

from __future__ import annotations

import asyncio
import secrets

from tests.integration.test_calls import DOMAIN, Rig, media_both_ways, rig
from tests.support.phone import apply_answer, plain_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sdes import answer_sdp, parse_media
from tests.support.sipmsg import SipMessage, parse_message

__all__ = ["rig"]


class ScriptedPeer(asyncio.DatagramProtocol):
    """Receives on the second PBX's port; answers only what the test tells it to."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.received: asyncio.Queue[tuple[SipMessage, tuple[str, int]]] = asyncio.Queue()
        self.log: list[SipMessage] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data, addr)
        self.log.append(msg)
        self.received.put_nowait((msg, addr))

    async def expect(self, method: str, timeout: float = 3.0) -> tuple[SipMessage, tuple]:
        async with asyncio.timeout(timeout):
            while True:
                msg, addr = await self.received.get()
                if msg.is_request and msg.method == method:
                    return msg, addr

    def reply(self, req: SipMessage, addr: tuple, status: int, reason: str, *,
              tag: str | None = None, body: str | None = None) -> None:
        resp = SipMessage(f"SIP/2.0 {status} {reason}")
        for via in req.header_all("via"):
            resp.add("Via", via)
        resp.add("From", req.header("from") or "")
        to = req.header("to") or ""
        resp.add("To", to + (f";tag={tag}" if tag and not req.to_tag else ""))
        resp.add("Call-ID", req.call_id)
        resp.add("CSeq", req.header("cseq") or "")
        if 100 < status < 300 and req.method == "INVITE":
            resp.add("Contact", f"<sip:callee@127.0.0.1:{self.port}>")
        if body is not None:
            resp.body = body.encode()
            resp.add("Content-Type", "application/sdp")
        assert self.transport is not None
        self.transport.sendto(resp.to_bytes(), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]


async def take_over(rig: Rig) -> ScriptedPeer:
    """Close the second PBX's phone and listen on its port with a scripted peer."""
    port = rig.pbx2.port
    await rig.pbx2.close()
    for _ in range(50):   # the phone's socket closes on the next loop iteration
        await asyncio.sleep(0.01)
        try:
            _, peer = await asyncio.get_running_loop().create_datagram_endpoint(
                ScriptedPeer, local_addr=("127.0.0.1", port))
            return peer
        except OSError:
            continue
    raise OSError(f"port {port} stayed busy")


async def test_2xx_crossing_cancel_is_acked_and_byed(rig: Rig) -> None:
    peer = await take_over(rig)
    ep = await RtpEndpoint.open()
    call = await rig.pbx.invite(f"sip:9100@{DOMAIN}", rig.udp, plain_offer(ep))
    invite, addr = await peer.expect("INVITE")
    tag = secrets.token_hex(4)
    peer.reply(invite, addr, 180, "Ringing", tag=tag)
    await call.wait_response(180, 3)
    assert (await call.cancel(3)).status == 200
    cancel, caddr = await peer.expect("CANCEL")
    peer.reply(cancel, caddr, 200, "OK")
    # our 200 to the INVITE "was already on the wire": it crosses the CANCEL
    answer = answer_sdp(invite.body, "127.0.0.1", 40000).sdp
    peer.reply(invite, addr, 200, "OK", tag=tag, body=answer)
    assert (await call.wait_final(3)).status == 487
    ack, _ = await peer.expect("ACK")
    assert ack.to_tag == tag
    bye, baddr = await peer.expect("BYE")
    assert bye.to_tag == tag and bye.call_id == invite.call_id
    peer.reply(bye, baddr, 200, "OK")
    await rig.settle()
    rig.assert_clean()
    peer.transport.close()


async def test_forked_early_dialogs_map_to_one_and_2xx_tag_wins(rig: Rig) -> None:
    peer = await take_over(rig)
    pbx_ep, callee_ep = await rig.endpoints()
    call = await rig.pbx.invite(f"sip:9100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
    invite, addr = await peer.expect("INVITE")
    fork_a, fork_b = "forka" + secrets.token_hex(3), "forkb" + secrets.token_hex(3)
    peer.reply(invite, addr, 180, "Ringing", tag=fork_a)
    other = await RtpEndpoint.open()
    peer.reply(invite, addr, 183, "Session Progress", tag=fork_b,
               body=answer_sdp(invite.body, "127.0.0.1", other.port).sdp)
    early = await call.wait_response(183, 3)
    ringing = await call.wait_response(180, 3)
    assert early.to_tag == ringing.to_tag          # one early dialog towards the caller
    answered = answer_sdp(invite.body, "127.0.0.1", callee_ep.port)
    peer.reply(invite, addr, 200, "OK", tag=fork_a, body=answered.sdp)
    final = await call.wait_final(3)
    assert final.status == 200 and final.to_tag == early.to_tag
    ack, _ = await peer.expect("ACK")
    assert ack.to_tag == fork_a                    # the 2xx's fork won
    # a late 2xx from the other fork: acknowledged, then that dialog is ended at once
    peer.reply(invite, addr, 200, "OK", tag=fork_b,
               body=answer_sdp(invite.body, "127.0.0.1", other.port).sdp)
    late_ack, _ = await peer.expect("ACK")
    late_bye, lbaddr = await peer.expect("BYE")
    assert late_ack.to_tag == late_bye.to_tag == fork_b
    peer.reply(late_bye, lbaddr, 200, "OK")
    apply_answer(pbx_ep, final.body)
    callee_ep.set_remote(answered.remote)
    await media_both_ways(pbx_ep, callee_ep)
    await call.bye(3)
    bye, baddr = await peer.expect("BYE")
    assert bye.to_tag == fork_a
    peer.reply(bye, baddr, 200, "OK")
    await rig.settle()
    rig.assert_clean()
    other.close()
    peer.transport.close()


async def scripted_caller() -> ScriptedPeer:
    _, peer = await asyncio.get_running_loop().create_datagram_endpoint(
        ScriptedPeer, local_addr=("127.0.0.1", 0))
    return peer


async def test_late_offer_callee_offers_in_2xx_caller_answers_in_ack(rig: Rig) -> None:
    """An INVITE without SDP: the callee offers in its 2xx, the gateway offers on to the caller
    in its own 2xx, the caller answers in the ACK and the gateway's ACK carries that on; a
    retransmitted 2xx (as if that ACK were lost) gets the same ACK, answer included."""
    callee = await take_over(rig)
    caller = await scripted_caller()
    a_ep, b_ep = await rig.endpoints()
    tag, cid = secrets.token_hex(4), secrets.token_hex(8)

    def caller_request(method: str, cseq: int, to_tag: str | None = None) -> SipMessage:
        req = SipMessage(f"{method} sip:9100@{DOMAIN} SIP/2.0")
        req.add("Via", f"SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bK"
                       f"{secrets.token_hex(6)};rport")
        req.add("Max-Forwards", "70").add("From", f"<sip:late@127.0.0.1>;tag={tag}")
        req.add("To", f"<sip:9100@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else ""))
        req.add("Call-ID", cid).add("CSeq", f"{cseq} {method}")
        req.add("Contact", f"<sip:late@127.0.0.1:{caller.port}>")
        return req

    caller.transport.sendto(caller_request("INVITE", 1).to_bytes(), rig.udp)
    invite, addr = await callee.expect("INVITE")
    assert not invite.body
    offer = answer_sdp(plain_offer(b_ep), *b_ep.addr).sdp  # a plain SDP for the callee
    callee.reply(invite, addr, 200, "OK", tag="late2xx", body=offer)
    async with asyncio.timeout(3):
        while True:
            msg, _ = await caller.received.get()
            if not msg.is_request and msg.status == 200:
                break
    ours = parse_media(msg.body)[0]
    assert ours.proto == "RTP/AVP" and ours.addr is not None
    answer = answer_sdp(msg.body, *a_ep.addr)
    a_ep.set_remote(answer.remote)
    ack = caller_request("ACK", 1, msg.to_tag)
    ack.body = answer.sdp.encode()
    ack.add("Content-Type", "application/sdp")
    caller.transport.sendto(ack.to_bytes(), rig.udp)
    gw_ack, _ = await callee.expect("ACK")
    assert gw_ack.to_tag == "late2xx" and gw_ack.sdp
    callee.reply(invite, addr, 200, "OK", tag="late2xx", body=offer)
    re_ack, _ = await callee.expect("ACK")
    assert re_ack.to_tag == "late2xx" and re_ack.cseq == gw_ack.cseq
    assert re_ack.sdp == gw_ack.sdp and re_ack.body == gw_ack.body
    b_ep.set_remote(parse_media(gw_ack.body)[0].addr)
    await media_both_ways(a_ep, b_ep)
    caller.transport.sendto(caller_request("BYE", 2, msg.to_tag).to_bytes(), rig.udp)
    bye, baddr = await callee.expect("BYE")
    callee.reply(bye, baddr, 200, "OK")
    await rig.settle()
    rig.assert_clean()
    for p in (caller, callee):
        p.transport.close()
