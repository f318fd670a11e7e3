"""The admin endpoint's strict request-head parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ops.admin import HttpError, Response, parse_head


def test_plain_get() -> None:
    r = parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9060\r\nAccept: */*")
    assert (r.method, r.path, r.content_length) == ("GET", "/metrics", 0)
    assert r.headers["host"] == "127.0.0.1:9060"


def test_post_with_small_body() -> None:
    r = parse_head(b"POST /reload HTTP/1.0\r\nContent-Length: 2")
    assert (r.method, r.content_length) == ("POST", 2)


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /metrics", 400),
    (b"GET metrics HTTP/1.1", 400),
    (b"get /metrics HTTP/1.1", 400),
    (b"GET /metrics HTTP/2.0", 400),
    (b"GET /a b HTTP/1.1", 400),
    (b"GET /\xff HTTP/1.1", 400),
    (b"GET / HTTP/1.1\r\nNo colon here", 400),
    (b"GET / HTTP/1.1\r\nBad Name: x", 400),
    (b"GET / HTTP/1.1\r\nX: \x00", 400),
    (b"POST /reload HTTP/1.1\r\nContent-Length: -1", 400),
    (b"POST /reload HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
    (b"POST /reload HTTP/1.1\r\nContent-Length: 99999", 413),
    (b"POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked", 411),
])
def test_malformed_heads_get_typed_errors(head: bytes, status: int) -> None:
    with pytest.raises(HttpError) as info:
        parse_head(head)
    assert info.value.status == status


def test_response_encoding() -> None:
    raw = Response(405, b"{}", extra=(("Allow", "POST"),)).encode()
    head, body = raw.split(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 405 Method Not Allowed"
    assert b"Content-Length: 2" in head and b"Allow: POST" in head and body == b"{}"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_give_a_typed_error(head: bytes) -> None:
    try:
        r = parse_head(head)
    except HttpError as exc:
        assert 400 <= exc.status < 500
        return
    assert r.path.startswith("/") and 0 <= r.content_length <= 1024


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=8))
def test_header_soup_parses_or_gives_a_typed_error(headers: list[tuple[str, str]]) -> None:
    raw = "GET /status HTTP/1.1\r\n" + "\r\n".join(f"{k}: {v}" for k, v in headers)
    try:
        parse_head(raw.encode("utf-8", "surrogatepass"))
    except HttpError as exc:
        assert exc.status in (400, 411, 413)
