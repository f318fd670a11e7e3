"""Topology hiding: a call carrying marked values in every header and SDP line it can, in both
directions; none of the marks may reach the other side unless the trunk's policy allows it.
"""

from __future__ import annotations

from tests.integration.test_calls import DOMAIN, Rig, media_both_ways, rig
from tests.support.phone import answerer, apply_answer
from tests.support.rtp import RtpEndpoint
from tests.support.sipmsg import SipMessage

__all__ = ["rig"]

CALLER_HEADERS = [
    ("Via", "SIP/2.0/UDP mkvia.internal:5099;branch=z9hG4bKmkbranch1"),
    ("Record-Route", "<sip:mkrr1.internal;lr>"),
    ("Route", "<sip:mkroute.internal;lr>"),
    ("X-Mark", "mkxheader"),
    ("Subject", "mksubject"),
    ("Organization", "mkorg"),
    ("P-Asserted-Identity", '"Mk Display" <sip:+4930999@mkpai.internal;user=phone>'),
    ("P-Preferred-Identity", "<sip:mkppi@mkppi.internal>"),
    ("Call-Info", "<http://mkcallinfo.internal/>;purpose=info"),
    ("Alert-Info", "<http://mkalert.internal/ring>"),
    ("Diversion", "<sip:mkdiv@mkdiv.internal>;reason=unconditional"),
    ("History-Info", "<sip:mkhist@mkhist.internal>;index=1"),
    ("Reply-To", "<sip:mkreply@mkreply.internal>"),
    ("Warning", '399 mkwarn.internal "mkwarning"'),
    ("Supported", "100rel, timer"),
]
CALLER_MARKS = ["mkvia", "mkbranch1", "mkrr1", "mkroute", "mkxheader", "mksubject", "mkorg",
                "mkpai", "Mk Display", "mkppi", "mkcallinfo", "mkalert", "mkdiv", "mkhist",
                "mkreply", "mkwarn.", "pbxmarkhost", "srtpgw-test-ua", "mksdpuser",
                "mksdpsession", "mksdpinfo", "mksdpuri", "mksdpemail", "mksdpphone",
                "mksdpmedia", "mksdptool", "mkcname"]

CALLEE_HEADERS = [
    ("X-Callee-Mark", "mkcallee"),
    ("Server", "mkserver/1.0"),
    ("Record-Route", "<sip:mkrr2.internal;lr>"),
    ("Warning", '399 mkwarn2.internal "mkwarning2"'),
    ("Organization", "mkorg2"),
]
CALLEE_MARKS = ["mkcallee", "mkserver", "mkrr2", "mkwarn2", "mkorg2", "test peer", "testpeer",
                "carrier.internal"]


def marked_offer(ep: RtpEndpoint) -> str:
    host, port = ep.addr
    return "\r\n".join([
        "v=0", f"o=mksdpuser 777001 1 IN IP4 {host}", "s=mksdpsession", "i=mksdpinfo",
        "u=http://mksdpuri.internal/", "e=mksdpemail@x.internal", "p=+1 555 0100 mksdpphone",
        f"c=IN IP4 {host}", "t=0 0", "a=tool:mksdptool 1.0", f"m=audio {port} RTP/AVP 0",
        "i=mksdpmedia",
        "a=rtpmap:0 PCMU/8000", "a=ptime:20", "a=ssrc:1234 cname:mkcname@mkcnamehost.internal",
        ""])


def wire(messages: list[SipMessage]) -> str:
    return "\n".join(m.to_bytes().decode("latin-1") for m in messages)


def leaks(text: str, marks: list[str]) -> list[str]:
    return [m for m in marks if m.lower() in text.lower()]


async def test_nothing_crosses_unless_allowed(rig: Rig) -> None:
    pbx_ep, car_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(car_ep)
    rig.carrier.uas.extra_headers = CALLEE_HEADERS
    rig.pbx.uas.extra_headers = CALLER_HEADERS[3:]
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, marked_offer(pbx_ep),
                                headers=CALLER_HEADERS,
                                from_uri="sip:pbxmarkuser@pbxmarkhost.internal")
    final = await call.wait_final(5)
    assert final.status == 200
    apply_answer(pbx_ep, final.body)
    incoming = await rig.carrier.wait_call(2)
    await incoming.wait_ack(2)
    await media_both_ways(pbx_ep, car_ep)
    info = await incoming.request("INFO", "x", "text/plain", headers=CALLEE_HEADERS)
    assert info.status == 200
    bye = await incoming.bye(3)
    assert bye.status == 200
    await call.wait_request("BYE", 2)

    pbx_own = [call.call_id, call.local_tag, call.invite.branch or "", *(
        m.branch or "" for m in rig.pbx.sent), f"127.0.0.1:{rig.pbx.port}"]
    carrier_side = wire(rig.carrier.received)
    assert leaks(carrier_side, CALLER_MARKS + pbx_own) == []
    carrier_own = [incoming.call_id, incoming.local_tag, *(
        m.branch or "" for m in rig.carrier.sent if m.is_request), f":{rig.carrier.port}"]
    pbx_side = wire(rig.pbx.received)
    assert leaks(pbx_side, CALLEE_MARKS + carrier_own) == []

    # what the policy lets through: From user, PAI user (trusted PBX) re-homed; Supported is
    # the gateway's own (none), never the caller's
    invite = incoming.invite
    assert "sip:pbxmarkuser@" in (invite.header("From") or "")
    assert invite.header("P-Asserted-Identity") == f"<sip:+4930999@{DOMAIN}>"
    assert invite.header("Supported") is None
    assert invite.header("User-Agent") == "srtpgw-test"
    assert "Record-Route" not in {n for n, _ in invite.headers}
    # our own Contact and Via are the listener the leg left from
    tls_host, tls_port = rig.tls
    assert f"{tls_host}:{tls_port}" in (invite.header("Contact") or "")
    assert f"{tls_host}:{tls_port}" in (invite.header("Via") or "")
    await rig.settle()
    rig.assert_clean()
