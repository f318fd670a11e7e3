"""Response counting: bounded label values whatever a peer writes."""

from __future__ import annotations

import pytest

from gateway.ops.sip_count import ResponseCounter, via_transport
from gateway.sip.message import SipResponse, parse_message


def response(status: int, method: str, via: str = "SIP/2.0/UDP 192.0.2.1:5060") -> SipResponse:
    msg = parse_message((f"SIP/2.0 {status} Whatever\r\nVia: {via};branch=z9hG4bKa1\r\n"
                         "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\n"
                         f"CSeq: 7 {method}\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, SipResponse)
    return msg


def test_counts_by_direction_method_class_and_transport() -> None:
    c = ResponseCounter()
    c.count("received", response(180, "INVITE"), "tls")
    c.count("received", response(200, "INVITE"), "tls")
    c.count("received", response(183, "INVITE"), "tls")
    c.sent(response(404, "INVITE"))
    c.sent(response(200, "BYE", "SIP/2.0/TLS 192.0.2.1:5061"))
    assert c.counts == {("received", "INVITE", "1xx", "tls"): 2,
                        ("received", "INVITE", "2xx", "tls"): 1,
                        ("sent", "INVITE", "4xx", "udp"): 1,
                        ("sent", "BYE", "2xx", "tls"): 1}


def test_invented_methods_and_transports_share_one_label() -> None:
    c = ResponseCounter()
    for i in range(50):
        c.sent(response(501, f"FOO{i}", f"SIP/2.0/X{i} 192.0.2.1"))
        c.count("received", response(699, f"BAR{i}"), f"sctp{i}")
    assert c.counts == {("sent", "other", "5xx", "other"): 50,
                        ("received", "other", "6xx", "other"): 50}


def bare_response(via_lines: str) -> SipResponse:
    msg = parse_message((f"SIP/2.0 200 OK\r\n{via_lines}From: <sip:a@b>;tag=1\r\n"
                         "To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 7 BYE\r\n"
                         "Content-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, SipResponse)
    return msg


@pytest.mark.parametrize(("vias", "transport"), [
    ("Via: SIP/2.0/TLS gw.example;branch=z9hG4bKa1\r\n", "tls"),
    ("v: SIP/2.0/tcp 192.0.2.1:5060;branch=z9hG4bKa1\r\n", "tcp"),
    ("Via: SIP / 2.0 / UDP\t[2001:db8::1]:5060;rport;branch=z9hG4bKa1\r\n", "udp"),
    ("Via: SIP/2.0/TLS a.example;branch=z9hG4bKa1, SIP/2.0/UDP b.example;branch=z9hG4bKb\r\n",
     "tls"),
    ("Via: SIP/2.0/UDP b.example;branch=z9hG4bKb\r\nVia: SIP/2.0/TLS a.example;branch=z9\r\n",
     "udp"),
    ("Via: SIP/2.0/SCTP a.example;branch=z9hG4bKa1\r\n", "other"),
    ("Via: SIP/2.0/WSS a.example;branch=z9hG4bKa1\r\n", "other"),
])
def test_sent_reads_the_transport_of_the_top_via_as_a_full_parse_would(
        vias: str, transport: str) -> None:
    r = bare_response(vias)
    assert r.top_via is not None
    parsed = r.top_via.transport.lower()
    assert transport == (parsed if parsed in ("udp", "tcp", "tls") else "other")
    c = ResponseCounter()
    c.sent(r)
    assert c.counts == {("sent", "BYE", "2xx", transport): 1}


def test_a_response_without_via_counts_as_other() -> None:
    r = bare_response("Via: SIP/2.0/TLS gw.example;branch=z9hG4bKa1\r\n")
    r.headers.remove("Via")
    c = ResponseCounter()
    c.sent(r)
    assert c.counts == {("sent", "BYE", "2xx", "other"): 1}


@pytest.mark.parametrize("text", ["", "SIP", "SIP/2.0", "SIP/2.0/", "SIP/2.0/ ", "/ / /x"])
def test_malformed_via_text_counts_as_other(text: str) -> None:
    assert via_transport(text) == "other"
