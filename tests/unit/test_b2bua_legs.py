"""A new call's two legs and where leg B goes (gateway.b2bua.legs)."""

from __future__ import annotations

from gateway.b2bua.legs import callee_leg, callee_ruri, caller_leg, caller_peer, route_request
from gateway.config import HostPort, Trunk, config_from_dict
from gateway.sip.message import parse_message
from gateway.sip.transport import MessageSource

INVITE = (
    b"INVITE sip:004930123@gw.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: \"Alice\" <sip:alice@pbx.internal>;tag=ta\r\n"
    b"To: <sip:004930123@gw.test>\r\n"
    b"Call-ID: cid@pbx.internal\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:alice@10.0.0.1:5060>\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def trunk(transport: str, port: int = 5070) -> Trunk:
    return Trunk(name=f"t-{transport}", side="legacy", transport=transport,
                 peer=HostPort("127.0.0.1", port), listener=transport, media="rtp")


def test_route_request_by_ruri_user():
    raw = {"listener": [{"name": "udp", "transport": "udp", "address": "127.0.0.1",
                         "port": 5060}],
           "trunk": [{"name": "pbx", "side": "legacy", "listener": "udp", "transport": "udp",
                      "peer": "127.0.0.1:5070", "media": "rtp",
                      "route": [{"prefix": "00", "strip": 2, "to": "far"}]},
                     {"name": "far", "side": "legacy", "listener": "udp", "transport": "udp",
                      "peer": "127.0.0.2:5070", "media": "rtp"}]}
    cfg = config_from_dict(raw, check_files=False)
    routed = route_request(cfg, parse_message(INVITE), cfg.trunk("pbx"))
    assert routed is not None and (routed.trunk.name, routed.user) == ("far", "4930123")
    assert route_request(cfg, parse_message(INVITE), cfg.trunk("far")) is None


def test_callee_ruri_names_the_transport():
    assert callee_ruri(trunk("udp"), "42") == "sip:42@127.0.0.1:5070"
    assert callee_ruri(trunk("tcp"), "") == "sip:127.0.0.1:5070;transport=tcp"
    assert callee_ruri(trunk("tls", 5081), "7") == "sip:7@127.0.0.1:5081;transport=tls"


def test_caller_peer_udp_source_else_contact_port_at_the_source_address():
    inv = parse_message(INVITE)
    udp = MessageSource(transport="udp", listener="udp", ip="127.0.0.5", port=40000)
    tls = MessageSource(transport="tls", listener="tls", ip="127.0.0.5", port=40001)
    assert caller_peer(trunk("udp"), udp, inv) == HostPort("127.0.0.5", 40000)
    # the Contact names 10.0.0.1:5060: its port counts, its host never does
    assert caller_peer(trunk("tls", 5081), tls, inv) == HostPort("127.0.0.5", 5060)
    portless = parse_message(INVITE.replace(b"@10.0.0.1:5060>", b"@phone.example>"))
    assert caller_peer(trunk("tls", 5081), tls, portless) == HostPort("127.0.0.5", 5081)


def test_legs_share_no_identifier():
    inv = parse_message(INVITE)
    a = caller_leg(inv, trunk("udp"), HostPort("10.0.0.1", 5060), "sip:127.0.0.1:5060")
    b = callee_leg(inv, trunk("tls", 5081), "4930123", "gw.test", "sip:127.0.0.1:5061")
    assert (a.call_id, a.remote_tag, a.remote_cseq) == ("cid@pbx.internal", "ta", 7)
    assert a.remote_target == "sip:alice@10.0.0.1:5060" and a.local_uri == "<sip:004930123@gw.test>"
    assert b.local_uri == "<sip:alice@gw.test>" and b.remote_uri == "<sip:4930123@127.0.0.1>"
    assert b.call_id != a.call_id and b.local_tag != a.local_tag and b.remote_tag is None
    assert "pbx.internal" not in b.local_uri + b.remote_uri + b.call_id


def test_callee_leg_anonymous_caller():
    inv = parse_message(INVITE.replace(b"<sip:alice@pbx.internal>", b"<sip:pbx.internal>"))
    b = callee_leg(inv, trunk("udp"), "", "gw.test", "sip:127.0.0.1:5060")
    assert (b.local_uri, b.remote_uri) == ("<sip:anonymous@gw.test>", "<sip:127.0.0.1>")
