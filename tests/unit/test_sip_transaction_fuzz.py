"""The transaction table under random interleavings of requests, responses, ACKs, CANCELs, TU
answers and timers: no exception, and once every INVITE we sent is CANCELled and time runs
out, no transaction and no bookkeeping is left behind (transport errors and TU drops included)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.transaction import Timers, TransactionLayer

PEER = ("192.0.2.7", 5060)
BRANCHES = [f"z9hG4bKfz{i}" for i in range(4)] + ["old2543"]


def _request(method: str, branch: str, call: int, to_tag: str | None) -> SipRequest:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    cseq_method = method
    data = (f"{method} sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.7:5060;branch={branch}\r\n"
            f"From: <sip:alice@example.com>;tag=a{call}\r\nTo: {to}\r\n"
            f"Call-ID: c{call}\r\nCSeq: 1 {cseq_method}\r\nContent-Length: 0\r\n\r\n").encode()
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def _response(req: SipRequest, status: int) -> SipResponse:
    resp = parse_message(req.create_response(status, to_tag="b1").to_bytes())
    assert isinstance(resp, SipResponse)
    return resp


STEP = st.tuples(
    st.sampled_from(["in", "out", "respond", "peer_answers", "cancel", "tick", "error",
                     "drop"]),
    st.sampled_from(["INVITE", "OPTIONS", "ACK", "CANCEL", "BYE"]),
    st.sampled_from(BRANCHES),
    st.integers(0, 2),
    st.sampled_from([100, 180, 200, 202, 404, 487, 503]),
    st.booleans(),
    st.floats(0, 40),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=40), reliable=st.booleans())
def test_random_interleavings(steps: list[tuple], reliable: bool) -> None:
    layer = TransactionLayer(Timers(0.5, 4.0, 5.0), max_transactions=8)
    now = 0.0
    served: list[tuple[tuple, SipRequest]] = []
    sent: dict[tuple, SipRequest] = {}
    counter = 0
    for action, method, branch, call, status, tagged, dt in steps:
        if action == "in":
            layer.receive(_request(method, branch, call, "t1" if tagged else None), PEER,
                          reliable, now)
        elif action == "out" and method not in ("ACK", "CANCEL"):
            counter += 1
            req = _request(method, f"z9hG4bKout{counter}", call, None)
            sent[layer.send_request(req, PEER, reliable, now)] = req
        elif action == "respond" and served:
            tid, req = served[counter % len(served)]
            layer.send_response(tid, _response(req, status), now)
        elif action == "peer_answers" and sent:
            req = list(sent.values())[call % len(sent)]
            layer.receive(_response(req, status), PEER, reliable, now)
        elif action == "cancel" and sent:
            layer.cancel(list(sent)[call % len(sent)], now)
        elif action == "error" and (served or sent):
            tids = [tid for tid, _ in served] + list(sent)
            layer.transport_error(tids[call % len(tids)], now)
        elif action == "drop" and served:
            layer.forget(served[call % len(served)][0])
        elif action == "tick":
            now += dt
            layer.handle_timer(now)
        while (ev := layer.next_event()) is not None:
            tid = getattr(ev, "tid", None)
            request = getattr(ev, "request", None)
            if tid is not None and request is not None and request.method != "ACK":
                served.append((tid, request))
        layer.messages_to_send()
    for tid in list(sent):
        layer.cancel(tid, now)
    for _ in range(20):
        now += 100.0
        layer.handle_timer(now)
        while layer.next_event() is not None:
            pass
    assert len(layer) == 0
    assert layer.get_timer() is None
    assert layer._merge == {} and layer._accepted == {}
