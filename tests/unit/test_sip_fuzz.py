"""Property-based tests: whatever the octets, parsing yields a message or a SipParseError, and a
parsed message re-serializes to something that parses to the same thing."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.errors import SipParseError
from gateway.sip.framing import StreamFramer
from gateway.sip.message import ParseLimits, SipRequest, error_response, parse_message
from gateway.sip.uri import parse_uri
from tests.conftest import RFC4475_DIR

SEEDS = [
    (b"INVITE sip:bob@example.com;transport=tcp SIP/2.0\r\n"
     b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport, SIP/2.0/TCP h;received=::1\r\n"
     b"Max-Forwards: 70\r\nf: \"A \\\"q\\\"\" <sip:a@example.com>;tag=1\r\n"
     b"t: sip:bob@example.com\r\n"
     b"i: x@y\r\nCSeq: 1 INVITE\r\nm: <sip:a@192.0.2.1>;expires=3\r\n"
     b"Route: <sip:p1;lr>, <sips:[2001:db8::1]:5061;lr>\r\nc: application/sdp\r\n"
     b"l: 5\r\n\r\nv=0\r\n"),
    (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TLS gw:5061;branch=z9hG4bKabc\r\n"
     b"From: <tel:+1-555;phone-context=x>;tag=9\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\n"
     b"CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"),
]
SEEDS += [p.read_bytes() for p in sorted(RFC4475_DIR.glob("*.dat"))] if RFC4475_DIR.is_dir() \
    else []
LIMITS = ParseLimits(max_message_size=8192, max_headers=40, max_header_line=1024,
                     max_uri_length=256)
TOKENS = [b"\r\n", b"\r\n\r\n", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"%",
          b"@", b"=", b"?", b"&", b"[", b"]", b"\x00", b"\xff", b"\xc3\xa9", b"sip:", b"tel:",
          b"SIP/2.0", b"z9hG4bK", b"Content-Length: 99999", b"l: -1", b"v:", b"9" * 30]


def check(data: bytes, stream: bool = False) -> None:
    try:
        msg = parse_message(data, LIMITS, stream=stream)
    except SipParseError as exc:
        assert 400 <= exc.status <= 599
        error_response(data, exc.status, "t")  # must not raise either
        return
    again = parse_message(msg.to_bytes(), ParseLimits(max_message_size=1 << 20, max_headers=400,
                                                      max_header_line=1 << 16,
                                                      max_uri_length=1 << 16))
    assert type(again) is type(msg)
    assert again.body == msg.body
    assert again.headers.get_all("Content-Length") == [str(len(msg.body))]
    assert [h for h in again.headers if h[0] != "Content-Length"] == \
        [h for h in msg.headers if h[0] != "Content-Length"]
    if isinstance(msg, SipRequest):
        assert isinstance(again, SipRequest) and str(again.uri) == str(msg.uri)
    msg.via, msg.from_, msg.to, msg.cseq, msg.contact  # noqa: B018 -- views work after parse


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_octets(data: bytes) -> None:
    check(data)
    check(data, stream=True)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 40),
                                                   st.sampled_from(TOKENS)), max_size=6))
def test_mutated_messages(seed: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    data = bytearray(seed)
    for pos, cut, token in edits:
        pos %= len(data) + 1
        data[pos:pos + cut % 4] = token if cut % 2 else b""
        if cut > 30 and data:
            data[pos % len(data)] ^= 1 << (cut % 8)
    check(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_uri_parser_total(text: str) -> None:
    try:
        uri = parse_uri(text)
    except SipParseError as exc:
        assert exc.status == 400
        return
    assert str(parse_uri(str(uri))) == str(uri)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.integers(0, 2000), max_size=8))
def test_framer_total(seed: bytes, cuts: list[int]) -> None:
    framer = StreamFramer(LIMITS, 4096)
    data = seed + b"\r\n\r\n" + seed
    points = sorted({c % (len(data) + 1) for c in cuts})
    try:
        last = 0
        for p in [*points, len(data)]:
            for item in framer.feed(data[last:p]):
                if isinstance(item, bytes):
                    check(item, stream=True)
            last = p
    except SipParseError as exc:
        assert exc.status in (400, 413)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["tag", "branch", "rport", "lr", "x-y", "Q", "a%b"]),
                          st.one_of(st.none(), st.sampled_from(
                              ["1", "z9hG4bK.x", "::1", "2001:db8::1", "[::1]", "]:[", "a:b",
                               "192.0.2.1", '"q"', "", "a b", "é"]))),
                max_size=4))
def test_fast_params_path_agrees_with_grammar(items: list[tuple[str, str | None]]) -> None:
    from gateway.sip.headers import _parse_params_lws, parse_params

    text = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in items)
    try:
        slow = _parse_params_lws(text, 0, "x")
    except SipParseError:
        slow = None
    try:
        fast = parse_params(text, 0, "x")
    except SipParseError:
        fast = None
    assert fast == slow


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["sip", "sips"]),
       st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9+.\-&=$,]{1,12}", fullmatch=True)),
       st.sampled_from(["h", "example.com", "a-b.c_d", "192.0.2.1", "[2001:db8::1]", "-x", "a."]),
       st.one_of(st.none(), st.integers(0, 70000)),
       st.lists(st.tuples(st.sampled_from(["lr", "transport", "maddr", "x[1]", "a:b"]),
                          st.one_of(st.none(), st.sampled_from(["udp", "TLS", "1.2.3.4", "$&+"]))),
                max_size=3))
def test_fast_uri_path_agrees_with_grammar(scheme: str, user: str | None, host: str,
                                           port: int | None,
                                           params: list[tuple[str, str | None]]) -> None:
    from gateway.sip.uri import _parse_sip

    rest = (f"{user}@" if user else "") + host + (f":{port}" if port is not None else "")
    rest += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)
    try:
        slow = _parse_sip(scheme, rest)
    except SipParseError:
        slow = None
    try:
        fast = parse_uri(f"{scheme}:{rest}")
    except SipParseError:
        fast = None
    assert fast == slow


@settings(max_examples=600, deadline=None)
@given(st.one_of(st.none(), st.sampled_from(['"Alice"', '""', "Bob", "A B", '"a\\\\"', "é"])),
       st.sampled_from(["sip:a@b", "sips:+1555@h.example:5061", "sip:h:65535", "sip:h:65536",
                        "sip:[::1]:5060", "sip:a@b;lr", "sip:a@b;transport=tls;x", "tel:+1",
                        "sip:a b@c", "sip:a@-b", "sip:a@b;=x"]),
       st.booleans(),
       st.sampled_from(["", ";tag=1", ";tag=a;q=0.5", ";expires=3600;+sip.instance",
                        "; tag=1", ";tag", ";received=::1", ";tag=\"q\"", ";;"]))
def test_fast_name_addr_check_agrees_with_parser(display: str | None, uri: str, angle: bool,
                                                 params: str) -> None:
    from gateway.sip import grammar as g
    from gateway.sip.headers import parse_name_addr

    text = (f"{display} <{uri}>" if display is not None else f"<{uri}>") if angle else uri
    text += params
    try:
        parse_name_addr(text, "x")
        valid = True
    except SipParseError:
        valid = False
    if g.NAME_ADDR_FAST_RE.fullmatch(text):
        assert valid, text  # the fast check may only accept what the parser accepts
