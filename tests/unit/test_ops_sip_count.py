"""Response counting: bounded label values whatever a peer writes."""

from __future__ import annotations

from gateway.ops.sip_count import ResponseCounter
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
