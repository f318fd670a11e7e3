"""What the gateway answers with (gateway.b2bua.status)."""

from __future__ import annotations

from gateway.b2bua.call import EndReason, Leg
from gateway.b2bua.status import (
    is_sdp,
    out_of_dialog_status,
    relayed_status,
    reply,
    teardown_status,
)
from gateway.config import HostPort, Trunk
from gateway.sip.message import parse_message

OPTIONS = (
    b"OPTIONS sip:gw.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@pbx.internal>;tag=ta\r\n"
    b"To: <sip:gw.test>\r\n"
    b"Call-ID: cid@pbx.internal\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_relayed_status_hides_redirects_and_challenges():
    assert [relayed_status(s) for s in (302, 380, 401, 407, 404, 486, 503, 200)] == \
        [480, 480, 403, 403, 404, 486, 503, 200]


def test_out_of_dialog_and_teardown_statuses():
    assert [out_of_dialog_status(m) for m in ("REGISTER", "BYE", "INFO", "REFER")] == \
        [405, 481, 481, 501]
    assert teardown_status(EndReason.CANCELLED) == 487
    assert teardown_status(EndReason.SHUTDOWN) == 503
    assert teardown_status(EndReason.MEDIA_TIMEOUT) == 500


def test_is_sdp_needs_body_and_type():
    req = parse_message(OPTIONS)
    assert not is_sdp(req)
    req.body = b"v=0\r\n"
    req.headers.add("Content-Type", "Application/SDP; charset=x")
    assert is_sdp(req)


def test_reply_uses_our_reason_and_the_legs_tag():
    req = parse_message(OPTIONS)
    bare = reply(req, 480, "gw/1", extra=[("Allow", "INVITE")])
    assert (bare.status, bare.reason) == (480, "Temporarily Unavailable")
    assert bare.to.tag and bare.headers.get("Server") == "gw/1"
    assert bare.headers.get("Allow") == "INVITE"
    t = Trunk(name="pbx", side="legacy", transport="udp", peer=HostPort("127.0.0.1", 5070),
              listener="udp", media="rtp")
    leg = Leg(trunk=t, call_id="cid@pbx.internal", local_tag="ours",
              local_uri="<sip:gw.test>", remote_uri="<sip:alice@pbx.internal>", peer=t.peer,
              contact="sip:127.0.0.1:5060")
    on_leg = reply(req, 200, None, leg=leg)
    assert on_leg.to.tag == "ours" and on_leg.headers.get("Server") is None
