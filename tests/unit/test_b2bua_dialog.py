"""Per-leg message building (gateway.b2bua.dialog)."""

from __future__ import annotations

from gateway.b2bua.call import Leg
from gateway.b2bua.dialog import (
    forwarded_hops,
    learn_response,
    request,
    response,
    uas_leg,
    without_tag,
)
from gateway.config import HostPort, Trunk
from gateway.sip.message import parse_message

INVITE = (
    b"INVITE sip:bob@gw.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:alice@pbx.internal>;tag=ta\r\n"
    b"To: <sip:bob@gw.test>\r\n"
    b"Call-ID: cid@pbx.internal\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.1:5060>\r\n"
    b"Record-Route: <sip:p1.internal;lr>, <sip:p2.internal;lr>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def leg() -> Leg:
    t = Trunk(name="pbx", side="legacy", transport="udp", peer=HostPort("127.0.0.1", 5070),
              listener="udp", media="rtp")
    return Leg(trunk=t, call_id="leg-a-cid", local_tag="ours", local_uri="<sip:bob@gw.test>",
               remote_uri='"Alice" <sip:alice@pbx.internal>', peer=t.peer,
               contact="sip:127.0.0.1:5060")


def test_without_tag():
    assert without_tag("<sip:a@b>;tag=x;foo=1", "From") == "<sip:a@b>;foo=1"


def test_uas_leg_and_in_dialog_request():
    inv = parse_message(INVITE)
    a = leg()
    a.call_id = inv.call_id
    uas_leg(a, inv)
    assert (a.remote_tag, a.remote_target, a.remote_cseq) == ("ta", "sip:alice@10.0.0.1:5060", 7)
    bye = parse_message(request(a, "BYE", user_agent="gw/1").to_bytes().replace(
        b"\r\n\r\n", b"\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\r\n", 1))
    assert str(bye.uri) == "sip:alice@10.0.0.1:5060"
    assert bye.headers.get_all("Route") == ["<sip:p1.internal;lr>", "<sip:p2.internal;lr>"]
    assert bye.from_.tag == "ours" and bye.to.tag == "ta"
    assert bye.cseq.number == 1 and bye.headers.get("User-Agent") == "gw/1"
    assert "Contact" not in bye.headers


def test_response_has_tag_contact_body():
    inv = parse_message(INVITE)
    resp = response(leg(), inv, 200, body=b"v=0\r\n", extra=[("Allow", "INVITE")])
    out = parse_message(resp.to_bytes())
    assert out.status == 200 and out.to.tag == "ours"
    assert out.headers.get("Contact") == "<sip:127.0.0.1:5060>"
    assert out.headers.get("Content-Type") == "application/sdp" and out.body == b"v=0\r\n"
    assert out.headers.get("Call-ID") == "cid@pbx.internal"


def test_learn_response_reverses_record_route():
    b = leg()
    resp = parse_message(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKq\r\n"
        b"From: <sip:a@gw>;tag=ours\r\nTo: <sip:b@x>;tag=tb\r\nCall-ID: leg-a-cid\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:b@192.0.2.9>\r\n"
        b"Record-Route: <sip:r1;lr>\r\nRecord-Route: <sip:r2;lr>\r\nContent-Length: 0\r\n\r\n")
    learn_response(b, resp)
    assert (b.remote_tag, b.remote_target) == ("tb", "sip:b@192.0.2.9")
    assert b.route_set == ("<sip:r2;lr>", "<sip:r1;lr>")


def test_forwarded_hops_is_received_minus_one():
    """RFC 7332 §3: the outgoing leg's Max-Forwards counts down from what arrived."""
    assert forwarded_hops(parse_message(INVITE)) == 69
    three = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 3")
    assert forwarded_hops(parse_message(three)) == 2
    assert forwarded_hops(parse_message(INVITE.replace(b"Max-Forwards: 70\r\n", b""))) == 69
    req = request(leg(), "INVITE", ruri="sip:x@y", max_forwards=2)
    assert req.headers.get("Max-Forwards") == "2"
