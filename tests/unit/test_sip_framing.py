"""Stream framing: Content-Length framing at every split, keep-alives, limits; identity rules."""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.framing import PING, Keepalive, StreamFramer
from gateway.sip.identity import fingerprint_matches, identity_matches
from gateway.sip.message import ParseLimits, error_response, parse_message

LIMITS = ParseLimits()


def msg(n: int, body: bytes = b"") -> bytes:
    return (f"OPTIONS sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK{n}\r\n"
            f"From: <sip:a@example.com>;tag={n}\r\nTo: <sip:bob@example.com>\r\n"
            f"Call-ID: {n}@example.com\r\nCSeq: {n} OPTIONS\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


STREAM = msg(1) + PING + msg(2, b"v=0\r\n\r\n\r\n") + b"\r\n" + msg(3, b"x")


def test_pipelined_messages_split_at_every_byte_boundary() -> None:
    expected = [msg(1), Keepalive(True), msg(2, b"v=0\r\n\r\n\r\n"), Keepalive(False), msg(3, b"x")]
    for cut in range(len(STREAM) + 1):
        framer = StreamFramer(LIMITS, 1 << 16)
        out = framer.feed(STREAM[:cut]) + framer.feed(STREAM[cut:])
        assert out == expected, cut
        assert framer.buffered == 0
    for second in range(0, len(STREAM), 7):  # three pieces
        framer = StreamFramer(LIMITS, 1 << 16)
        out = []
        for piece in (STREAM[:second], STREAM[second:second + 5], STREAM[second + 5:]):
            out += framer.feed(piece)
        assert out == expected


def test_byte_by_byte() -> None:
    framer = StreamFramer(LIMITS, 1 << 16)
    out = []
    for i in range(len(STREAM)):
        out += framer.feed(STREAM[i:i + 1])
    assert [parse_message(m, stream=True).call_id for m in out if isinstance(m, bytes)] == \
        ["1@example.com", "2@example.com", "3@example.com"]


def test_lone_crlf_is_a_pong_only_on_our_connections() -> None:
    assert StreamFramer(LIMITS, 1024, expect_pong=True).feed(b"\r\n") == [Keepalive(False)]
    listener = StreamFramer(LIMITS, 1024)
    assert listener.feed(b"\r\n") == []
    assert listener.feed(b"\r\n") == [Keepalive(True)]


def test_partial_flag() -> None:
    framer = StreamFramer(LIMITS, 1 << 16)
    assert not framer.partial
    framer.feed(b"\r\n")
    assert not framer.partial  # a lone CRLF keep-alive is not a message in progress
    framer.feed(msg(1)[:20])
    assert framer.partial
    framer.feed(msg(1, b"abc")[20:-2])
    assert framer.partial  # header done, body still pending
    framer.feed(b"bc")
    assert not framer.partial


@pytest.mark.parametrize(("data", "status"), [
    (b"A" * 2000, 413),                                       # buffer limit without CRLFCRLF
    (msg(1).replace(b"Content-Length: 0", b"X: 1"), 400),     # no Content-Length on a stream
    (msg(1).replace(b"Content-Length: 0", b"Content-Length: -1"), 400),
    (msg(1).replace(b"Content-Length: 0\r\n", b"Content-Length: 1\r\nl: 2\r\n"), 400),
    (msg(1).replace(b"Content-Length: 0", b"Content-Length: 99999"), 413),
])
def test_framing_errors(data: bytes, status: int) -> None:
    framer = StreamFramer(ParseLimits(max_message_size=1500), 1800)
    with pytest.raises(SipParseError) as info:
        framer.feed(data)
    assert info.value.status == status


def test_error_response_salvages_dialog_headers() -> None:
    bad = msg(7).replace(b"To: <sip:bob@example.com>", b'To: "unterminated <sip:b@x>')
    with pytest.raises(SipParseError):
        parse_message(bad)
    found = error_response(bad, 400, "t1")
    assert found is not None and found[0].status == 400
    reply = found[0]
    out = parse_message(reply.to_bytes().replace(b'"unterminated', b"unterminated"))
    assert out.call_id == "7@example.com" and out.cseq.number == 7 and out.to.tag == "t1"
    assert error_response(b"garbage\r\n\r\n", 400, "t") is None
    assert error_response(bad.replace(b"OPTIONS sip", b"ACK sip"), 400, "t") is None
    assert error_response(b"SIP/2.0 200 OK\r\n" + bad.split(b"\r\n", 1)[1], 400, "t") is None


def test_error_response_reads_only_the_validated_top_via() -> None:
    """A broken second Via is copied as text, never parsed: the top one alone says where the
    answer goes (issue 13 item 1)."""
    bad = msg(8).replace(b"\r\nFrom", b"\r\nVia: garbage\r\nFrom", 1)
    with pytest.raises(SipParseError):
        parse_message(bad)
    found = error_response(bad, 400, "t1")
    assert found is not None
    reply, top = found
    assert reply.headers.get_all("Via")[1] == "garbage"
    assert (top.transport, top.branch) == ("TCP", parse_message(msg(8)).branch)


def test_identity_rules() -> None:
    assert identity_matches(("sip:Peer.Example.",), ("sip:peer.example",))
    assert identity_matches(("peer.example",), ("sips:peer.example",))
    assert not identity_matches(("peer.example",), ("*.example", "other.example"))
    assert not identity_matches(("a.peer.example",), ("*.peer.example",))
    assert not identity_matches((), ("peer.example",))
    assert fingerprint_matches(("sha-256 AB:CD",), "abcd")
    assert not fingerprint_matches(("abcd",), None)


def test_folded_content_length_frames_like_the_parser_reads_it() -> None:
    """§7.3.1: a header value may be folded (CRLF 1*WSP). The framer must read the same
    Content-Length the parser does, or a valid pipelined stream is cut as a framing error."""
    first = msg(1, b"abcd").replace(b"Content-Length: 4", b"Content-Length:\r\n\t 4")
    second = msg(2).replace(b"Content-Length: 0", b"l :\r\n 0")
    framer = StreamFramer(LIMITS, 1 << 16)
    out = framer.feed(first + second)
    assert out == [first, second]
    assert parse_message(out[0], stream=True).body == b"abcd"
    assert parse_message(out[1], stream=True).body == b""
