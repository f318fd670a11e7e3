"""Transaction layer (RFC 3261 §17, RFC 6026), driven with explicit time: no sleeps, no sockets."""

from __future__ import annotations

import itertools

import pytest

from gateway.sip.events import (
    AckTimeout,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    Terminated,
    TimedOut,
    TransportFailed,
)
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.transaction import (
    MAGIC_COOKIE,
    Timers,
    TransactionLayer,
    new_branch,
    timer_durations,
)

T = Timers(t1=0.5, t2=4.0, t4=5.0)
PEER = ("192.0.2.7", 5060)


def request(method: str = "INVITE", branch: str | None = None, cseq: int = 1,
            via_host: str = "192.0.2.7", call_id: str = "call-1@example.com",
            to: str = "<sip:bob@example.com>") -> SipRequest:
    branch = branch or new_branch()
    data = (f"{method} sip:bob@example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via_host}:5060;branch={branch}\r\n"
            f"From: <sip:alice@example.com>;tag=a1\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n").encode()
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def response(req: SipRequest, status: int, to_tag: str | None = "b1") -> SipResponse:
    resp = req.create_response(status, to_tag=to_tag)
    out = parse_message(resp.to_bytes())
    assert isinstance(out, SipResponse)
    return out


def events(layer: TransactionLayer) -> list[object]:
    out = []
    while (e := layer.next_event()) is not None:
        out.append(e)
    return out


def sent(layer: TransactionLayer) -> list[bytes]:
    return [t.data for t in layer.messages_to_send()]


def run_until(layer: TransactionLayer, end: float) -> list[float]:
    """Fire every timer up to ``end``; returns the times at which something was sent."""
    times = []
    while (when := layer.get_timer()) is not None and when <= end:
        layer.handle_timer(when)
        if layer.messages_to_send():
            times.append(round(when, 3))
    return times


# ------------------------------------------------------------------ INVITE client


def test_invite_client_timer_a_doubles_and_b_times_out() -> None:
    layer = TransactionLayer(T)
    tid = layer.send_request(request(), PEER, reliable=False, now=0.0)
    assert len(sent(layer)) == 1
    times = run_until(layer, 40.0)
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    ev = events(layer)
    assert TimedOut(tid) in ev and Terminated(tid) in ev
    assert len(layer) == 0


def test_invite_client_reliable_no_retransmission() -> None:
    layer = TransactionLayer(T)
    tid = layer.send_request(request(), PEER, reliable=True, now=0.0)
    sent(layer)
    assert run_until(layer, 40.0) == []
    assert TimedOut(tid) in events(layer)


def test_invite_client_non_2xx_generates_ack_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer(T)
    req = request()
    tid = layer.send_request(req, PEER, reliable=False, now=0.0)
    sent(layer)
    layer.receive(response(req, 180), PEER, False, 0.1)
    assert [type(e) for e in events(layer)] == [ResponseReceived]
    assert run_until(layer, 10.0) == []  # timer A stopped by the provisional
    busy = response(req, 486)
    layer.receive(busy, PEER, False, 10.0)
    (ack_data,) = sent(layer)
    ack = parse_message(ack_data)
    assert isinstance(ack, SipRequest) and ack.method == "ACK"
    assert ack.branch == req.branch and ack.cseq.method == "ACK" and ack.cseq.number == 1
    assert ack.to.tag == "b1" and str(ack.uri) == str(req.uri)
    ev = events(layer)
    assert [e.response.status for e in ev if isinstance(e, ResponseReceived)] == [486]
    layer.receive(busy, PEER, False, 11.0)
    assert sent(layer) == [ack_data] and events(layer) == []
    run_until(layer, 10.0 + 31.9)
    assert layer.state(tid) == "completed"
    run_until(layer, 10.0 + 32.0)
    assert Terminated(tid) in events(layer)


def test_invite_client_2xx_accepted_then_retransmitted_2xx_passed_up() -> None:
    layer = TransactionLayer(T)
    req = request()
    tid = layer.send_request(req, PEER, reliable=False, now=0.0)
    sent(layer)
    ok = response(req, 200)
    layer.receive(ok, PEER, False, 0.2)
    assert layer.state(tid) == "accepted" and sent(layer) == []  # the TU ACKs a 2xx
    layer.receive(ok, PEER, False, 0.7)
    assert [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)] == \
        [200, 200]
    run_until(layer, 0.2 + 32.0)
    assert Terminated(tid) in events(layer)


def test_stray_response_reported_without_tid() -> None:
    layer = TransactionLayer(T)
    layer.receive(response(request(), 200), PEER, False, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, ResponseReceived) and ev.tid is None


# ------------------------------------------------------------------ non-INVITE client


def test_non_invite_client_timer_e_caps_at_t2_and_f_fires() -> None:
    layer = TransactionLayer(T)
    tid = layer.send_request(request("OPTIONS"), PEER, reliable=False, now=0.0)
    sent(layer)
    times = run_until(layer, 40.0)
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a == pytest.approx(4.0) for a, b in itertools.pairwise(times[4:]))
    assert max(times) < 32.0
    assert TimedOut(tid) in events(layer)


def test_non_invite_client_provisional_sets_interval_to_t2_then_final_waits_k() -> None:
    layer = TransactionLayer(T)
    req = request("BYE")
    tid = layer.send_request(req, PEER, reliable=False, now=0.0)
    sent(layer)
    layer.receive(response(req, 100), PEER, False, 0.1)
    assert run_until(layer, 0.6) == [0.5]
    assert run_until(layer, 4.6) == [4.5]
    layer.receive(response(req, 200), PEER, False, 5.0)
    layer.receive(response(req, 200), PEER, False, 5.1)
    statuses = [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)]
    assert statuses == [100, 200]
    assert layer.state(tid) == "completed"
    run_until(layer, 10.0)
    assert layer.state(tid) is None


def test_non_invite_client_reliable_final_terminates_at_once() -> None:
    layer = TransactionLayer(T)
    req = request("OPTIONS")
    tid = layer.send_request(req, PEER, reliable=True, now=0.0)
    layer.receive(response(req, 200), PEER, True, 0.1)
    assert Terminated(tid) in events(layer) and layer.get_timer() is None


def test_transport_error_ends_transaction() -> None:
    layer = TransactionLayer(T)
    tid = layer.send_request(request("OPTIONS"), PEER, reliable=True, now=0.0)
    layer.transport_error(tid, 0.1)
    assert events(layer) == [TransportFailed(tid), Terminated(tid)]


def test_send_request_refuses_ack_and_reused_branch() -> None:
    layer = TransactionLayer(T)
    with pytest.raises(ValueError):
        layer.send_request(request("ACK"), PEER, False, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request("OPTIONS", branch="1234"), PEER, False, 0.0)
    req = request("OPTIONS")
    layer.send_request(req, PEER, False, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(req, PEER, False, 0.0)


# ------------------------------------------------------------------ INVITE server


def test_invite_server_trying_after_200ms_unless_tu_answers() -> None:
    layer = TransactionLayer(T)
    quick = request()
    layer.receive(quick, PEER, False, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(quick, 180), 0.1)
    run_until(layer, 1.0)
    assert [d[:20] for d in sent(layer)] == [b"SIP/2.0 180 Ringing\r"]
    early = request(call_id="call-2@example.com")
    layer.receive(early, PEER, False, 2.0)
    layer.receive(early, PEER, False, 2.05)  # a retransmission gets the 100 at once
    assert sent(layer)[0].startswith(b"SIP/2.0 100 Trying")


def test_invite_server_sends_trying_and_absorbs_retransmission() -> None:
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    assert sent(layer) == []
    layer.handle_timer(0.2)
    (trying,) = sent(layer)
    assert trying.startswith(b"SIP/2.0 100 Trying")
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and ev.request is req
    layer.receive(req, PEER, False, 0.5)
    assert sent(layer) == [trying] and events(layer) == []
    ringing = response(req, 180)
    assert layer.send_response(ev.tid, ringing, 0.6)
    layer.receive(req, PEER, False, 1.0)
    assert sent(layer)[-1] == ringing.to_bytes()


def test_invite_server_non_2xx_timer_g_h_and_ack_absorbed() -> None:
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    sent(layer)
    assert layer.send_response(ev.tid, response(req, 486), 1.0)
    assert not layer.send_response(ev.tid, response(req, 200), 1.0)
    assert len(sent(layer)) == 1
    assert run_until(layer, 8.5) == [1.5, 2.5, 4.5, 8.5]
    layer.receive(req, PEER, False, 8.6)
    assert len(sent(layer)) == 1  # retransmitted INVITE gets the final response again
    ack = request("ACK", branch=req.branch)
    layer.receive(ack, PEER, False, 8.7)
    assert events(layer) == [] and layer.state(ev.tid) == "confirmed"
    assert run_until(layer, 20.0) == []
    assert Terminated(ev.tid) in events(layer)


def test_invite_server_timer_h_reports_missing_ack() -> None:
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, True, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(req, 404), 0.0)
    assert len(sent(layer)) == 1  # the 404 (answered before a 100 Trying was due)
    assert run_until(layer, 40.0) == []
    assert events(layer) == [AckTimeout(ev.tid), Terminated(ev.tid)]


def test_invite_server_2xx_retransmitted_until_ack() -> None:
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    sent(layer)
    layer.send_response(ev.tid, response(req, 200), 1.0)
    sent(layer)
    assert run_until(layer, 4.0) == [1.5, 2.5]
    layer.receive(req, PEER, False, 4.0)  # INVITE retransmission absorbed in Accepted
    assert sent(layer) == [] and events(layer) == []
    ack = request("ACK")  # a 2xx ACK has its own branch
    layer.receive(ack, PEER, False, 4.1)
    (ack_ev,) = events(layer)
    assert isinstance(ack_ev, RequestReceived) and ack_ev.tid is None
    assert run_until(layer, 40.0) == []
    assert events(layer) == [Terminated(ev.tid)]


def test_invite_server_2xx_without_ack_times_out() -> None:
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(req, 200), 0.0)
    run_until(layer, 40.0)
    assert events(layer) == [AckTimeout(ev.tid), Terminated(ev.tid)]


def test_cancel_matches_invite_and_is_answered() -> None:
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    sent(layer)
    cancel = request("CANCEL", branch=req.branch)
    layer.receive(cancel, PEER, False, 0.5)
    (ok,) = sent(layer)
    assert ok.startswith(b"SIP/2.0 200 OK") and b"CANCEL" in ok
    assert events(layer) == [CancelReceived(ev.tid, cancel, PEER)]
    assert layer.send_response(ev.tid, response(req, 487), 0.6)


def test_cancel_without_invite_gets_481() -> None:
    layer = TransactionLayer(T)
    layer.receive(request("CANCEL"), PEER, False, 0.0)
    (data,) = sent(layer)
    assert data.startswith(b"SIP/2.0 481")
    assert events(layer) == []


def test_cancel_matching_by_sent_by_not_only_branch() -> None:
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    sent(layer)
    layer.receive(request("CANCEL", branch=req.branch, via_host="198.51.100.1"), PEER, False, 0.1)
    assert sent(layer)[0].startswith(b"SIP/2.0 481")


def test_cancel_and_ack_only_from_the_invites_own_origin() -> None:
    """Same branch and sent-by, another peer (trunk, transport or source): the CANCEL gets 481
    and the INVITE goes on; a foreign ACK or retransmission does not touch the transaction
    (RFC 3261 §9.2, §17.2.3; issue 13 item 14)."""
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    other = ("192.0.2.99", 5061)
    layer.receive(request("CANCEL", branch=req.branch), other, False, 0.1)
    (data,) = sent(layer)
    assert data.startswith(b"SIP/2.0 481")
    assert [e for e in events(layer) if isinstance(e, CancelReceived)] == []
    layer.receive(req, other, False, 0.15)  # a "retransmission" from elsewhere: nothing sent
    assert sent(layer) == []
    assert layer.send_response(ev.tid, response(req, 486), 0.2)
    sent(layer)
    ack = request("ACK", branch=req.branch)
    layer.receive(ack, other, False, 0.3)
    assert layer.state(ev.tid) == "completed"  # still retransmitting the 486 to its caller
    layer.receive(ack, PEER, False, 0.4)
    assert layer.state(ev.tid) == "confirmed"


def test_rfc2543_fallback_matching() -> None:
    layer = TransactionLayer(T)
    req = request(branch="oldstyle")
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    assert ev.tid[0] == "s2543"
    sent(layer)
    layer.receive(request(branch="oldstyle"), PEER, False, 0.5)
    assert len(sent(layer)) == 1 and events(layer) == []  # matched as a retransmission
    layer.receive(request(branch=MAGIC_COOKIE, call_id="c2"), PEER, False, 0.6)  # badbranch
    (ev2,) = events(layer)
    assert ev2.tid[0] == "s2543" and ev2.tid != ev.tid


# ------------------------------------------------------------------ non-INVITE server


def test_non_invite_server_timer_j_and_retransmissions() -> None:
    layer = TransactionLayer(T)
    req = request("OPTIONS")
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    layer.receive(req, PEER, False, 0.2)
    assert sent(layer) == []  # absorbed in Trying
    assert layer.send_response(ev.tid, response(req, 200), 0.3)
    (ok,) = sent(layer)
    layer.receive(req, PEER, False, 1.0)
    assert sent(layer) == [ok]
    run_until(layer, 0.3 + 31.9)
    assert layer.state(ev.tid) == "completed"
    run_until(layer, 0.3 + 32.0)
    assert layer.state(ev.tid) is None


def test_non_invite_server_reliable_final_terminates() -> None:
    layer = TransactionLayer(T)
    req = request("OPTIONS")
    layer.receive(req, PEER, True, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(req, 200), 0.0)
    assert Terminated(ev.tid) in events(layer)


# ------------------------------------------------------------------ CANCEL from the client side


def test_client_cancel_waits_for_provisional() -> None:
    layer = TransactionLayer(T)
    req = request()
    tid = layer.send_request(req, PEER, reliable=False, now=0.0)
    sent(layer)
    assert layer.cancel(tid, 0.1)
    assert sent(layer) == []
    layer.receive(response(req, 180), PEER, False, 0.2)
    (cancel_data,) = sent(layer)
    cancel = parse_message(cancel_data)
    assert isinstance(cancel, SipRequest) and cancel.method == "CANCEL"
    assert cancel.branch == req.branch and cancel.cseq.number == req.cseq.number
    assert cancel.to.tag is None
    layer.receive(response(cancel, 200), PEER, False, 0.3)
    layer.receive(response(req, 487), PEER, False, 0.4)
    statuses = [(e.response.cseq.method, e.response.status) for e in events(layer)
                if isinstance(e, ResponseReceived)]
    assert statuses == [("INVITE", 180), ("CANCEL", 200), ("INVITE", 487)]
    assert not layer.cancel(tid, 0.5)


def test_transaction_table_is_bounded() -> None:
    layer = TransactionLayer(T, max_transactions=3)
    for i in range(3):
        layer.receive(request("OPTIONS", call_id=f"c{i}"), PEER, False, 0.0)
    assert len(events(layer)) == 3
    layer.receive(request("OPTIONS", call_id="c3"), PEER, False, 0.0)
    (busy,) = sent(layer)
    assert busy.startswith(b"SIP/2.0 503 ") and b"Retry-After: 5" in busy
    assert events(layer) == [] and len(layer) == 3


def test_unanswered_server_transactions_expire() -> None:
    layer = TransactionLayer(T)
    options = request("OPTIONS")
    layer.receive(options, PEER, False, 0.0)
    layer.receive(request("INVITE"), PEER, False, 0.0)
    nist, ist = (e.tid for e in events(layer))
    run_until(layer, 31.9)
    assert layer.state(nist) == "trying"
    run_until(layer, 32.0)
    assert layer.state(nist) is None and events(layer) == [Terminated(nist)]
    assert layer.send_response(ist, response(request("INVITE"), 180), 100.0)
    run_until(layer, 279.0)  # timer C restarted by the provisional
    assert layer.state(ist) == "proceeding"
    run_until(layer, 280.0)
    assert layer.state(ist) is None


def test_answered_server_transaction_does_not_expire_early() -> None:
    layer = TransactionLayer(T)
    req = request("INVITE")
    layer.receive(req, PEER, True, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(req, 200), 1.0)
    run_until(layer, 32.9)
    assert layer.state(ev.tid) == "accepted"  # waits for the ACK (timer L), not timer C


def test_forget_ends_without_answer() -> None:
    layer = TransactionLayer(T)
    layer.receive(request("OPTIONS"), PEER, False, 0.0)
    (ev,) = events(layer)
    assert layer.forget(ev.tid) and not layer.forget(ev.tid)
    assert sent(layer) == [] and events(layer) == [Terminated(ev.tid)]
    assert not layer.send_response(ev.tid, response(request("OPTIONS"), 200), 0.1)


def test_timer_heap_stays_bounded() -> None:
    layer = TransactionLayer(T)
    for i in range(5000):
        req = request("OPTIONS")
        layer.receive(req, PEER, True, float(i))
        (ev,) = [e for e in events(layer) if isinstance(e, RequestReceived)]
        layer.send_response(ev.tid, response(req, 200), float(i))  # cancels timer Y
    assert len(layer) == 0 and len(layer._heap) <= 1024
    sent(layer)


# ------------------------------------------------------------------ review: §9.1, §9.2, §8.2.2.2


def test_cancelled_invite_without_final_response_ends_after_64_t1() -> None:
    """§9.1: a callee that answers the CANCEL but never the INVITE must not hold the client
    transaction forever; 64*T1 after the CANCEL it is over."""
    layer = TransactionLayer(T)
    req = request()
    tid = layer.send_request(req, PEER, reliable=True, now=0.0)
    layer.receive(response(req, 180), PEER, True, 1.0)
    assert layer.cancel(tid, 2.0)
    (cancel_data,) = [d for d in sent(layer) if d.startswith(b"CANCEL")]
    cancel = parse_message(cancel_data)
    assert isinstance(cancel, SipRequest)
    layer.receive(response(cancel, 200), PEER, True, 2.1)
    layer.receive(response(req, 183), PEER, True, 2.2)  # a late provisional changes nothing
    events(layer)
    run_until(layer, 33.9)
    assert layer.state(tid) == "proceeding"
    run_until(layer, 34.0)
    assert layer.state(tid) is None
    assert TimedOut(tid) in events(layer) and len(layer) == 0


def test_cancel_after_final_response_gets_200_without_cancelling() -> None:
    """§9.2: a CANCEL matching an INVITE transaction that already answered is answered 200 and
    has no effect (481 is only for a CANCEL matching no transaction)."""
    for status in (486, 200):
        layer = TransactionLayer(T)
        req = request()
        layer.receive(req, PEER, False, 0.0)
        (ev,) = events(layer)
        layer.send_response(ev.tid, response(req, status), 0.1)
        sent(layer)
        layer.receive(request("CANCEL", branch=req.branch), PEER, False, 0.2)
        (ok,) = sent(layer)
        assert ok.startswith(b"SIP/2.0 200 OK") and b"CANCEL" in ok
        assert not [e for e in events(layer) if isinstance(e, CancelReceived)]
        assert layer.state(ev.tid) in ("completed", "accepted")


def test_merged_request_gets_482() -> None:
    """§8.2.2.2: a request without To tag whose From tag, Call-ID and CSeq match an ongoing
    transaction it does not belong to (a forked copy arriving by another path) is a loop: 482,
    and the TU never sees it (a B2BUA would otherwise place the call twice)."""
    layer = TransactionLayer(T)
    first = request()
    layer.receive(first, PEER, False, 0.0)
    (ev,) = events(layer)
    sent(layer)
    copy = request(branch=new_branch())
    layer.receive(copy, ("198.51.100.9", 5060), False, 0.1)
    (loop,) = sent(layer)
    assert loop.startswith(b"SIP/2.0 482 ") and copy.branch.encode() in loop
    resp = parse_message(loop)
    assert isinstance(resp, SipResponse) and resp.to.tag
    assert [e for e in events(layer) if isinstance(e, RequestReceived)] == []
    layer.receive(copy, ("198.51.100.9", 5060), False, 0.2)  # retransmission: same 482
    assert sent(layer) == [loop] and events(layer) == []
    assert layer.send_response(ev.tid, response(first, 180), 0.3)  # the original is untouched
    in_dialog = request("INVITE", branch=new_branch(), to="<sip:bob@example.com>;tag=b1")
    layer.receive(in_dialog, PEER, False, 0.4)  # a To tag: not for the merge check
    assert [type(e) for e in events(layer)] == [RequestReceived]


def test_requests_differing_in_cseq_or_call_id_are_not_merged() -> None:
    layer = TransactionLayer(T)
    layer.receive(request("OPTIONS"), PEER, False, 0.0)
    layer.receive(request("OPTIONS", cseq=2), PEER, False, 0.0)
    layer.receive(request("OPTIONS", call_id="other"), PEER, False, 0.0)
    layer.receive(request("INFO"), PEER, False, 0.0)
    assert len([e for e in events(layer) if isinstance(e, RequestReceived)]) == 4
    assert sent(layer) == []


def test_merge_check_ends_with_the_transaction() -> None:
    layer = TransactionLayer(T)
    first = request("OPTIONS")
    layer.receive(first, PEER, True, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(first, 200), 0.1)  # reliable: terminated at once
    sent(layer)
    events(layer)
    layer.receive(request("OPTIONS"), PEER, True, 0.2)
    assert [type(e) for e in events(layer)] == [RequestReceived] and sent(layer) == []


def test_layer_generated_final_responses_carry_a_to_tag() -> None:
    """§8.2.6.2: every response but 100 gets a To tag; §9.2: the 200 to a CANCEL should carry
    the tag the INVITE's responses used."""
    layer = TransactionLayer(T)
    layer.receive(request("CANCEL"), PEER, False, 0.0)
    (nomatch,) = sent(layer)
    resp = parse_message(nomatch)
    assert isinstance(resp, SipResponse) and resp.status == 481 and resp.to.tag
    req = request(call_id="c2")
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(req, 180, to_tag="ring1"), 0.1)
    sent(layer)
    layer.receive(request("CANCEL", branch=req.branch, call_id="c2"), PEER, False, 0.2)
    (ok,) = sent(layer)
    resp = parse_message(ok)
    assert isinstance(resp, SipResponse) and resp.status == 200 and resp.to.tag == "ring1"
    full = TransactionLayer(T, max_transactions=0)
    full.receive(request("OPTIONS"), PEER, False, 0.0)
    (busy,) = sent(full)
    resp = parse_message(busy)
    assert isinstance(resp, SipResponse) and resp.status == 503 and resp.to.tag


def test_timer_durations_follow_rfc3261_table_4() -> None:
    fast = timer_durations(Timers(t1=0.1, t2=4.0, t4=5.0))
    assert fast["D", False] == 32.0 and fast["D", True] == 0.0  # "> 32 s" whatever T1 is
    slow = timer_durations(Timers(t1=2.0, t2=4.0, t4=3.0))
    assert slow["D", False] == 128.0
    for name in ("B", "F", "H", "L", "M"):
        assert slow[name, False] == slow[name, True] == 128.0
    assert (slow["I", False], slow["K", False], slow["J", False]) == (3.0, 3.0, 128.0)
    assert slow["I", True] == slow["J", True] == slow["K", True] == 0.0


def test_reloaded_timers_apply_to_new_transactions() -> None:
    layer = TransactionLayer(T)
    layer.timers = Timers(t1=1.0, t2=4.0, t4=5.0)
    tid = layer.send_request(request("OPTIONS"), PEER, reliable=False, now=0.0)
    sent(layer)
    assert run_until(layer, 63.9)[:3] == [1.0, 3.0, 7.0]
    run_until(layer, 64.0)
    assert TimedOut(tid) in events(layer)


def test_ended_accepted_invite_leaves_no_ack_bookkeeping() -> None:
    """An INVITE server transaction ended early (transport error) while waiting for the ACK of
    its 2xx must not leave its ACK-matching entry behind (one leaked entry per call)."""
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, True, 0.0)
    (ev,) = events(layer)
    layer.send_response(ev.tid, response(req, 200), 0.1)
    layer.transport_error(ev.tid, 0.2)
    assert len(layer) == 0 and layer._accepted == {}


def test_cancel_twice_sends_one_cancel() -> None:
    """§9.1: one CANCEL per INVITE; a second cancel() (ring timeout racing the caller's own
    CANCEL) is a no-op, not a ValueError from reusing the CANCEL's branch."""
    layer = TransactionLayer(T)
    req = request()
    tid = layer.send_request(req, PEER, reliable=False, now=0.0)
    layer.receive(response(req, 180), PEER, False, 0.1)
    sent(layer)
    assert layer.cancel(tid, 0.2)
    assert not layer.cancel(tid, 0.3)
    assert [d[:6] for d in sent(layer)] == [b"CANCEL"]
    pending = TransactionLayer(T)
    tid = pending.send_request(request(), PEER, reliable=False, now=0.0)
    assert pending.cancel(tid, 0.1) and not pending.cancel(tid, 0.2)


def test_stateless_refusal_is_sent_once_and_keeps_no_transaction() -> None:
    """§8.2.7 (issue 13 item 17): no timer G, no state; a retransmission starts afresh."""
    layer = TransactionLayer(T)
    req = request()
    layer.receive(req, PEER, False, 0.0)
    (ev,) = events(layer)
    refusal = response(req, 403, to_tag=layer.stateless_tag(ev.tid))
    assert not layer.answer_stateless(ev.tid, response(req, 200))  # only refusals
    assert layer.answer_stateless(ev.tid, refusal)
    assert sent(layer) == [refusal.to_bytes()] and len(layer) == 0
    assert events(layer) == [Terminated(ev.tid)]
    run_until(layer, 40.0)
    assert sent(layer) == []
    layer.receive(req, PEER, False, 41.0)  # the INVITE again: a new request for the TU
    assert [type(e) for e in events(layer)] == [RequestReceived]
    assert layer.stateless_tag(ev.tid) == refusal.to.tag
