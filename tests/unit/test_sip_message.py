"""Message layer: RFC 4475 torture vectors, typed views, serialization and limits."""

from __future__ import annotations

import csv

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.headers import Headers, NameAddr, Via, split_list
from gateway.sip.message import ParseLimits, SipRequest, SipResponse, parse_message
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri, unescape
from tests.conftest import rfc4475_dir


def _index() -> list[dict[str, str]]:
    with (rfc4475_dir() / "INDEX.tsv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _vector(name: str) -> bytes:
    return (rfc4475_dir() / name).read_bytes()


def _names(cls: str) -> list[str]:
    try:
        return [r["filename"] for r in _index() if r["class"] == cls]
    except OSError:
        return []


def _same(a: SipRequest | SipResponse, b: SipRequest | SipResponse) -> None:
    assert type(a) is type(b)
    if isinstance(a, SipRequest):
        assert isinstance(b, SipRequest)
        assert (a.method, str(a.uri)) == (b.method, str(b.uri))
    else:
        assert isinstance(b, SipResponse)
        assert (a.status, a.reason) == (b.status, b.reason)
    assert [(n, v) for n, v in a.headers if n != "Content-Length"] == \
        [(n, v) for n, v in b.headers if n != "Content-Length"]
    assert a.body == b.body
    assert a.via == b.via and a.cseq == b.cseq and a.call_id == b.call_id
    assert a.from_ == b.from_ and a.to == b.to


def test_index_is_complete() -> None:
    rows = _index()
    assert len(rows) == 49
    for row in rows:
        assert (rfc4475_dir() / row["filename"]).is_file()


@pytest.mark.parametrize("name", _names("valid"))
def test_rfc4475_valid_parses_and_round_trips(name: str) -> None:
    msg = parse_message(_vector(name))
    again = parse_message(msg.to_bytes())
    _same(msg, again)
    assert parse_message(again.to_bytes()).to_bytes() == again.to_bytes()


INVALID = {
    "badinv01.dat": 400, "clerr.dat": 400, "ncl.dat": 400, "scalar02.dat": 400,
    "scalarlg.dat": 400, "quotbal.dat": 400, "ltgtruri.dat": 400, "lwsruri.dat": 400,
    "lwsstart.dat": 400, "trws.dat": 400, "escruri.dat": 400, "regbadct.dat": 400,
    "badaspec.dat": 400, "baddn.dat": 400, "badvers.dat": 505, "mismatch01.dat": 400,
    "mismatch02.dat": 400, "bigcode.dat": 400,
    # semantic ones a parser can decide
    "insuf.dat": 400, "multi01.dat": 400, "mcl01.dat": 400,
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_refused_with_status(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(_vector(name))
    assert info.value.status == INVALID[name]


def test_every_invalid_vector_is_covered() -> None:
    # baddate is the one "invalid" vector RFC 4475 lets a parser accept (Date unused).
    assert set(_names("invalid")) - set(INVALID) == {"baddate.dat"}
    msg = parse_message(_vector("baddate.dat"))
    assert msg.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_baddn_refused_for_its_display_name_not_framing() -> None:
    with pytest.raises(SipParseError, match="From"):
        parse_message(_vector("baddn.dat") + b"\r\n")


@pytest.mark.parametrize("name", sorted(set(_names("semantic")) - set(INVALID)))
def test_rfc4475_semantic_ones_parse(name: str) -> None:
    msg = parse_message(_vector(name))
    _same(msg, parse_message(msg.to_bytes()))


def test_responses_with_bad_scalars_are_refused() -> None:
    for name in ("bigcode.dat", "scalarlg.dat"):
        with pytest.raises(SipParseError):
            parse_message(_vector(name))


def test_unknown_scheme_is_opaque() -> None:
    msg = parse_message(_vector("unkscm.dat"))
    assert isinstance(msg, SipRequest)
    assert isinstance(msg.uri, AbsoluteUri)
    assert str(msg.uri) == "nobodyKnowsThisScheme:totallyopaquecontent"


def test_wsinv_typed_views() -> None:
    msg = parse_message(_vector("wsinv.dat"))
    assert isinstance(msg, SipRequest)
    assert [v.branch for v in msg.via] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert [v.transport for v in msg.via] == ["UDP", "TCP", "UDP"]
    assert msg.to.tag == "1918181833n"
    assert msg.from_.tag == "98asjd8"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.cseq.number == 9 and msg.cseq.method == "INVITE"
    assert msg.max_forwards == 68
    assert msg.headers.get("subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    contact = msg.contact[0]
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.route[0].uri.params["lr"] is None  # type: ignore[union-attr]
    assert len(msg.body) == 150


def test_dblreq_trailing_octets_ignored_on_datagram() -> None:
    msg = parse_message(_vector("dblreq.dat"))
    assert isinstance(msg, SipRequest) and msg.method == "REGISTER" and msg.body == b""


def test_inv2543_body_is_rest_of_datagram_but_stream_needs_length() -> None:
    data = _vector("inv2543.dat")
    msg = parse_message(data)
    assert msg.body.startswith(b"v=0") and msg.branch is None
    with pytest.raises(SipParseError):
        parse_message(data, stream=True)


def test_mpart01_body_passed_through_untouched() -> None:
    data = _vector("mpart01.dat")
    msg = parse_message(data)
    assert msg.body == data[data.index(b"\r\n\r\n") + 4:]
    assert b"\n" in msg.body and parse_message(msg.to_bytes()).body == msg.body


def test_escnull_keeps_escaped_nul() -> None:
    msg = parse_message(_vector("escnull.dat"))
    uri = msg.contact[1].uri
    assert isinstance(uri, SipUri) and uri.user == "%00%00" and unescape(uri.user) == "\0\0"


def test_intmeth_unusual_characters() -> None:
    msg = parse_message(_vector("intmeth.dat"))
    assert isinstance(msg, SipRequest) and isinstance(msg.uri, SipUri)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'


SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 30000 RTP/AVP 0\r\n")
INVITE = (b"INVITE sip:bob@127.0.0.1:5060;transport=udp SIP/2.0\r\n"
          b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK776asdhds;rport\r\n"
          b"Max-Forwards: 70\r\n"
          b"t: Bob <sip:bob@example.com>\r\n"
          b"f: \"Alice A.\" <sip:alice@example.com>;tag=1928301774\r\n"
          b"i: a84b4c76e66710@pc33.example.com\r\n"
          b"CSeq: 314159 INVITE\r\n"
          b"m: <sip:alice@127.0.0.1:5070>, <sip:alice2@127.0.0.1:5070>;q=0.5\r\n"
          b"c: application/sdp\r\n"
          b"l: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP)


def test_compact_forms_become_long_names() -> None:
    msg = parse_message(INVITE)
    names = [n for n, _ in msg.headers]
    assert names == ["Via", "Max-Forwards", "To", "From", "Call-ID", "CSeq", "Contact",
                     "Content-Type", "Content-Length"]
    assert msg.headers.get("v") == msg.headers.get("VIA")
    assert msg.content_type == "application/sdp"
    assert [c.uri.user for c in msg.contact] == ["alice", "alice2"]  # type: ignore[union-attr]
    via = msg.top_via
    assert via is not None and via.rport_requested and via.rport is None
    assert via.sent_by == ("127.0.0.1", 5070)


def test_to_bytes_sets_content_length() -> None:
    msg = parse_message(INVITE)
    msg.body = b"hello"
    out = parse_message(msg.to_bytes())
    assert out.headers.get_all("Content-Length") == ["5"] and out.body == b"hello"
    msg.headers.remove("Content-Length")
    assert b"Content-Length: 5\r\n\r\nhello" in msg.to_bytes()


def test_headers_container() -> None:
    h = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("X-Foo", "1"), ("Via", "SIP/2.0/UDP b")])
    assert h.get_all("via") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b"]
    h.add("Via", "SIP/2.0/TCP c", first=True)
    assert h.get("Via") == "SIP/2.0/TCP c"
    assert h.remove_first("via") == "SIP/2.0/TCP c"
    h.set("x-foo", "2")
    assert h.get("X-Foo") == "2" and "x-FOO" in h and "X-Bar" not in h
    assert h.replace_first("via", "SIP/2.0/UDP z") and h.get_all("Via")[0] == "SIP/2.0/UDP z"
    assert not h.replace_first("Route", "<sip:x>")
    assert h.remove("Via") == 2 and len(h) == 1


def test_typed_view_cache_follows_header_changes() -> None:
    msg = parse_message(INVITE)
    assert msg.cseq.number == 314159
    msg.headers.set("CSeq", "2 INVITE")
    assert msg.cseq.number == 2
    top = msg.via[0]
    top.params["received"] = "192.0.2.1"
    msg.headers.set("Via", str(top))
    assert msg.top_via is not None and msg.top_via.received == "192.0.2.1"


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z>') == ['"a, b" <sip:x@y;p=1,2>', "<sip:z>"]
    with pytest.raises(SipParseError):
        split_list('"open, b')


def test_uri_parse_and_format() -> None:
    uri = parse_uri("sips:alice:pw@[2001:db8::1]:5061;transport=TCP;lr?Subject=hi&X=1")
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == \
        ("sips", "alice", "pw", "[2001:db8::1]", 5061)
    assert uri.transport == "tcp" and uri.secure and uri.params["lr"] is None
    assert uri.headers == {"Subject": "hi", "X": "1"}
    assert str(uri) == "sips:alice:pw@[2001:db8::1]:5061;transport=TCP;lr?Subject=hi&X=1"
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(tel, SipUri) and tel.user == "+1-201-555-0123"
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    for bad in ("sip:", "sip:host:99999", "sip:a b@host", "sip:host;=x", "<sip:x>", "sip:h?a"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_name_addr_and_via_format() -> None:
    na = NameAddr(parse_uri("sip:a@b"), 'Say "hi"', {"tag": "x"})
    assert str(na) == '"Say \\"hi\\"" <sip:a@b>;tag=x'
    via = Via("TLS", "gw.example", 5061, {"branch": "z9hG4bKabc", "rport": None})
    assert str(via) == "SIP/2.0/TLS gw.example:5061;branch=z9hG4bKabc;rport"


def test_create_response_copies_dialog_headers() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, SipRequest)
    resp = req.create_response(180, to_tag="abc")
    out = parse_message(resp.to_bytes())
    assert isinstance(out, SipResponse) and out.status == 180 and out.reason == "Ringing"
    assert out.to.tag == "abc" and out.from_.tag == "1928301774"
    assert out.via == req.via and out.cseq == req.cseq and out.call_id == req.call_id
    assert "Record-Route" not in out.headers


def test_create_response_copies_record_route_for_dialogs_only() -> None:
    data = INVITE.replace(b"c: application/sdp", b"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"
                          b"Timestamp: 54\r\nc: application/sdp")
    req = parse_message(data)
    assert isinstance(req, SipRequest)
    ok = req.create_response(200, to_tag="t")
    assert ok.headers.get_all("Record-Route") == ["<sip:p1;lr>, <sip:p2;lr>"]
    assert "Timestamp" not in ok.headers
    assert "Record-Route" not in req.create_response(486, to_tag="t").headers
    assert req.create_response(100).headers.get("Timestamp") == "54"


LIMITS = ParseLimits(max_message_size=2000, max_headers=12, max_header_line=200,
                     max_uri_length=64)


@pytest.mark.parametrize(("data", "status"), [
    (INVITE + b"x" * 2000, 413),
    (INVITE.replace(b"sip:bob@", b"sip:" + b"b" * 80 + b"@"), 414),
    (INVITE.replace(b"Max-Forwards: 70\r\n", b"X-A: 1\r\n" * 10), 400),
    (INVITE.replace(b"Max-Forwards: 70", b"X-Long: " + b"a" * 300), 400),
    (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
    (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400),
    (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE"), 400),
    (INVITE.replace(b"rport", b"rport=0"), 400),
    (INVITE.replace(b"rport", b"received=999"), 400),
    (INVITE.replace(b"i: a84b", b"i: a 84b"), 400),
    (b"SIP/2.0 99 Low\r\n" + INVITE.split(b"\r\n", 1)[1], 400),
    (INVITE.replace(b"t: Bob", b" t: Bob"), 400),
    (INVITE[:60], 400),
    (b"", 400),
])
def test_limits_and_malformed_fields(data: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data, LIMITS)
    assert info.value.status == status


@pytest.mark.parametrize("value", [b"a\x00b", b"a\x07b", b"a\x7fb", b"a\nb", b"a\rb", b"a\x1bb"])
def test_control_octets_in_a_header_value_are_refused(value: bytes) -> None:
    """RFC 3261 §25.1: TEXT-UTF8 has no control octets; a NUL or bare LF must not reach the far
    leg inside a relayed header (found by `srtpgw probe` against our own gateway)."""
    data = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 70\r\nSubject: " + value)
    with pytest.raises(SipParseError) as info:
        parse_message(data, LIMITS)
    assert info.value.status == 400


def test_leading_crlf_ignored() -> None:
    assert isinstance(parse_message(b"\r\n\r\n" + INVITE), SipRequest)


@pytest.mark.parametrize("data", [
    INVITE.replace(b";rport\r\n", b";rport,,SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"),
    INVITE.replace(b";rport\r\n", b";rport,\r\n"),
    INVITE.replace(b"m: <sip:alice@127.0.0.1:5070>, ", b"m: <sip:alice@127.0.0.1:5070>,, "),
    INVITE.replace(b"Max-Forwards: 70", b"Route: <sip:p1.example.com;lr>, ,<sip:p2;lr>"),
    INVITE.replace(b"Max-Forwards: 70", b"Record-Route:  "),
])
def test_empty_list_elements_are_refused(data: bytes) -> None:
    """§7.3.1 / RFC 4475 §3.1.2.1: ``Via: a,,b`` has an empty via-parm; the grammar allows
    none, and silently dropping it would hide a malformed (or smuggled) element."""
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400


def test_received_may_be_an_ipv6_reference() -> None:
    """RFC 5118 §4.5: RFC 3261's ABNF forgot brackets for an IPv6 ``received``; elements send
    both forms, so both parse (a proxy's bracketed received must not make the request a 400)."""
    for received in ("2001:db8::9", "[2001:db8::9]"):
        msg = parse_message(INVITE.replace(b"rport\r\n", b"rport\r\nVia: SIP/2.0/UDP "
                                           b"[2001:db8::9]:5060;branch=z9hG4bKp1;received="
                                           + received.encode() + b"\r\n"))
        assert msg.via[1].received == received
    for bad in (b"[2001:db8::9", b"[1.2.3.4]", b"[]"):
        with pytest.raises(SipParseError):
            parse_message(INVITE.replace(b"rport\r\n", b"rport;received=" + bad + b"\r\n"))
