"""Response counting: bounded label values whatever a peer writes."""

from __future__ import annotations

import pytest

from gateway.ops.sip_count import ResponseCounter, via_transport
from gateway.sip.events import RequestReceived
from gateway.sip.message import SipRequest, SipResponse, error_response, parse_message
from gateway.sip.transaction import TransactionLayer


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


def request(method: str, branch: str, call_id: str = "x") -> SipRequest:
    msg = parse_message((f"{method} sip:c@d SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP 192.0.2.1;branch={branch}\r\n"
                         f"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: {call_id}\r\n"
                         f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


def test_layer_reports_its_own_responses_once() -> None:
    """482, 481, 503 and 100 the layer answers itself; the TU's answer and retransmits are not
    reported, so the stack can count each response exactly once."""
    layer = TransactionLayer(max_transactions=2)
    src = ("192.0.2.1", 5060)
    layer.receive(request("INVITE", "z9hG4bKi1"), src, False, 0.0)
    layer.receive(request("INVITE", "z9hG4bKi2"), src, False, 0.0)  # merged: 482
    layer.receive(request("OPTIONS", "z9hG4bKo0", "x"), src, False, 0.0)  # (merged: no slot)
    layer.receive(request("OPTIONS", "z9hG4bKo1", "y"), src, False, 0.0)  # table full: 503
    layer.handle_timer(0.3)  # the first INVITE's 100 Trying
    layer.receive(request("INVITE", "z9hG4bKi1"), src, False, 0.4)  # retransmission
    ev = layer.next_event()
    assert isinstance(ev, RequestReceived) and ev.tid is not None
    assert layer.send_response(ev.tid, ev.request.create_response(486, to_tag="t"), 0.5)
    assert [(r.status, r.cseq.method) for r in layer.own_responses()] == [
        (482, "INVITE"), (503, "OPTIONS"), (100, "INVITE")]
    assert layer.own_responses() == []
    sent = layer.messages_to_send()
    assert [t.data.split(b" ", 2)[1] for t in sent] == [b"482", b"503", b"100", b"100", b"486"]
    layer.max_transactions = 10
    layer.receive(request("CANCEL", "z9hG4bKnone", "y"), src, False, 0.6)  # no INVITE: 481
    assert [r.status for r in layer.own_responses()] == [481]


def test_stateless_answer_without_cseq_counts_as_other() -> None:
    """An answer to a request with a broken CSeq echoes what it can; counting must not raise."""
    found = error_response(b"OPTIONS sip:c@d SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKq"
                           b"\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: q\r\n\r\n",
                           400, "t")
    assert found is not None
    reply = found[0]
    c = ResponseCounter()
    c.sent(reply)
    assert c.counts == {("sent", "other", "4xx", "tcp"): 1}
