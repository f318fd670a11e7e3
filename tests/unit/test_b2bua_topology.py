"""Header filtering rules for topology hiding (gateway.b2bua.topology)."""

from __future__ import annotations

import dataclasses

from gateway.b2bua.topology import (
    agent_header,
    copy_headers,
    rewrite_identity,
    unsupported_required,
)
from gateway.config import HostPort, Trunk


def trunk(name: str, **kw) -> Trunk:
    return Trunk(name=name, side="legacy", transport="udp", peer=HostPort("127.0.0.1", 5070),
                 listener="udp", media="rtp", **kw)


HEADERS = [
    ("Via", "SIP/2.0/UDP pbx.internal:5060;branch=z9hG4bKmark1"),
    ("v", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKmark2"),
    ("Record-Route", "<sip:proxy.internal;lr>"),
    ("Route", "<sip:gw;lr>"),
    ("Contact", "<sip:alice@10.0.0.1>"),
    ("From", "<sip:alice@pbx.internal>;tag=mark3"),
    ("To", "<sip:bob@gw>"),
    ("Call-ID", "mark4@pbx.internal"),
    ("CSeq", "1 INVITE"),
    ("Max-Forwards", "70"),
    ("User-Agent", "MarkPBX 1.0"),
    ("X-Secret", "mark5"),
    ("Supported", "100rel, timer, replaces"),
    ("k", "100rel"),
    ("Allow", "INVITE, ACK, PRACK, BYE"),
    ("Session-Expires", "1800;refresher=uac"),
    ("P-Asserted-Identity", '"Alice" <sip:+4930123@pbx.internal;user=phone>'),
    ("Subject", "mark6"),
]


def test_only_allow_listed_headers_cross():
    out = copy_headers(HEADERS, trunk("a"), trunk("b"), "gw.test")
    names = [n.lower() for n, _ in out]
    assert names == ["session-expires"]
    text = repr(out)
    for mark in ("mark", "internal", "10.0.0.1", "MarkPBX", "4930123"):
        assert mark not in text


def test_allow_and_supported_never_cross_even_if_listed():
    """The gateway states its own per leg (issue 13 item 7); 100rel leaves a passed Require."""
    src = trunk("a", pass_headers=("Allow", "Supported", "k", "Require"))
    out = copy_headers([*HEADERS, ("Require", "100rel, timer")], src, trunk("b"), "gw.test")
    assert out == [("Require", "timer")]


def test_pai_only_from_trusted_and_rehomed():
    out = dict(copy_headers(HEADERS, trunk("a", trusted=True), trunk("b"), "gw.test"))
    assert out["P-Asserted-Identity"] == "<sip:+4930123@gw.test>"
    assert rewrite_identity("<tel:+4930123;phone-context=x>", "gw") == "<tel:+4930123>"
    assert rewrite_identity("garbage", "gw") is None


def test_pass_and_deny_lists():
    src = trunk("a", pass_headers=("X-Secret", "Subject"))
    dst = trunk("b", deny_headers=("subject",))
    out = copy_headers(HEADERS, src, dst, "gw.test")
    assert [n for n, _ in out] == ["X-Secret"]
    src = dataclasses.replace(src, deny_headers=("x-secret",))
    assert "X-Secret" not in dict(copy_headers(HEADERS, src, dst, "gw.test"))


def test_own_headers_never_cross_even_if_listed():
    src = trunk("a", pass_headers=("Via", "Contact", "Call-ID", "User-Agent", "Record-Route"))
    assert copy_headers(HEADERS, src, trunk("b"), "gw.test") == []


def test_require_checks():
    assert unsupported_required([("Require", "100rel, foo")], ["timer"]) == ["100rel", "foo"]
    assert unsupported_required([("Require", "timer, 100REL")], ["timer"]) == ["100REL"]
    assert unsupported_required([("Supported", "100rel")], ["timer"]) == []


def test_agent_header():
    assert agent_header(None, request=True) == []
    assert agent_header("srtpgw", request=False) == [("Server", "srtpgw")]
