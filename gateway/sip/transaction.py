"""RFC 3261 §17 transactions as a sans-IO core (with the RFC 6026 Accepted states).

Shaped like aioquic's ``QuicConnection``: messages go in through ``receive()`` /
``send_request()`` / ``send_response()`` with the current time, bytes come out of
``messages_to_send()``, the caller arms one timer from ``get_timer()`` and calls
``handle_timer(now)``, and ``next_event()`` yields what the transaction user must know.
Addresses are opaque: whatever the caller passes as ``source``/``dest`` comes back on
``Transmit.dest``. Retransmissions happen only when the caller says the transport is unreliable.

Beyond §17 proper, the layer also retransmits a UAS's 2xx until the ACK arrives (§13.3.1.4) and
answers CANCEL itself (§9.2: 200 when it matches an INVITE in progress, else 481), because every
user of this stack needs exactly that behaviour.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import operator
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config import SipSection
from gateway.sip.errors import SipParseError
from gateway.sip.events import (
    AckTimeout,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    Terminated,
    Tid,
    TimedOut,
    Transmit,
    TransportFailed,
)
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse, parse_message

MAGIC_COOKIE = "z9hG4bK"
# How long a server transaction waits for its TU before it is forgotten: 64*T1 for non-INVITE
# (the client has given up by then), and Timer C's 3 minutes for INVITE, restarted by every
# provisional response. Without this an unanswered request (a handler bug, or a request the
# firewall dropped without telling us) would hold memory forever.
TU_INVITE_TIMEOUT = 180.0
# §17.2.1: 100 Trying goes out only if the TU has not answered within 200 ms, so a request the
# TU drops on purpose (a firewall verdict) gets no response at all.
TRYING_DELAY = 0.2


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie plus 80 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def _new_tag() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Timers:
    """T1 (RTT estimate), T2 (max retransmit interval), T4 (max network lifetime), seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @classmethod
    def from_config(cls, sip: SipSection) -> Timers:
        return cls(sip.t1, sip.t2, sip.t4)


# Transaction kinds and states (§17.1.1, §17.1.2, §17.2.1, §17.2.2, RFC 6026).
ICT, NICT, IST, NIST = "ict", "nict", "ist", "nist"
CALLING, TRYING, PROCEEDING, COMPLETED, CONFIRMED, ACCEPTED = (
    "calling", "trying", "proceeding", "completed", "confirmed", "accepted")

# Message inputs: a response received by a client transaction, a response the TU sends through
# a server transaction, an ACK, or a retransmitted request.
R1XX, R2XX, RFINAL = "1xx", "2xx", "300-699"
S1XX, S2XX, SFINAL = "send 1xx", "send 2xx", "send 300-699"
ACK, REQUEST = "ack", "request"

# The state machines of Figures 5-8 (with RFC 6026's Accepted state) as data, h11 style:
# (kind, state, input) -> next state. A pair not listed is absorbed (a response or request
# retransmission with nothing to do) or refused (``send_response`` returns False). What a
# transition does (send, pass up, arm timers) is in the code that takes it; the timers each
# state runs are in ``timer_durations``. Timers and transport errors lead to Terminated.
TRANSITIONS: dict[tuple[str, str, str], str] = {
    # INVITE client, §17.1.1.2
    (ICT, CALLING, R1XX): PROCEEDING,
    (ICT, CALLING, R2XX): ACCEPTED,
    (ICT, CALLING, RFINAL): COMPLETED,
    (ICT, PROCEEDING, R1XX): PROCEEDING,
    (ICT, PROCEEDING, R2XX): ACCEPTED,
    (ICT, PROCEEDING, RFINAL): COMPLETED,
    (ICT, ACCEPTED, R2XX): ACCEPTED,  # every 2xx goes up: the TU ACKs each (RFC 6026 §8.4)
    (ICT, COMPLETED, RFINAL): COMPLETED,  # a retransmitted final response: ACK it again
    # non-INVITE client, §17.1.2.2
    (NICT, TRYING, R1XX): PROCEEDING,
    (NICT, TRYING, R2XX): COMPLETED,
    (NICT, TRYING, RFINAL): COMPLETED,
    (NICT, PROCEEDING, R1XX): PROCEEDING,
    (NICT, PROCEEDING, R2XX): COMPLETED,
    (NICT, PROCEEDING, RFINAL): COMPLETED,
    # INVITE server, §17.2.1
    (IST, PROCEEDING, S1XX): PROCEEDING,
    (IST, PROCEEDING, S2XX): ACCEPTED,
    (IST, PROCEEDING, SFINAL): COMPLETED,
    (IST, PROCEEDING, REQUEST): PROCEEDING,  # send the last provisional again
    (IST, COMPLETED, REQUEST): COMPLETED,  # send the final response again
    (IST, COMPLETED, ACK): CONFIRMED,
    (IST, CONFIRMED, ACK): CONFIRMED,  # absorbed
    # non-INVITE server, §17.2.2
    (NIST, TRYING, S1XX): PROCEEDING,
    (NIST, TRYING, S2XX): COMPLETED,
    (NIST, TRYING, SFINAL): COMPLETED,
    (NIST, PROCEEDING, S1XX): PROCEEDING,
    (NIST, PROCEEDING, S2XX): COMPLETED,
    (NIST, PROCEEDING, SFINAL): COMPLETED,
    (NIST, PROCEEDING, REQUEST): PROCEEDING,
    (NIST, COMPLETED, REQUEST): COMPLETED,
}


def timer_durations(timers: Timers) -> dict[tuple[str, bool], float]:
    """RFC 3261 Table 4 (and RFC 6026 L, M): (timer, reliable transport) -> seconds.

    A, E, G and G2 are first retransmission intervals and run on unreliable transports only;
    0 means the state is left at once (Timer D, I, J, K on a reliable transport)."""
    t1, t4 = timers.t1, timers.t4
    out: dict[tuple[str, bool], float] = {}
    for reliable in (False, True):
        out.update({
            ("A", reliable): t1, ("E", reliable): t1, ("G", reliable): t1,
            ("G2", reliable): t1,
            ("B", reliable): 64 * t1, ("F", reliable): 64 * t1, ("H", reliable): 64 * t1,
            ("L", reliable): 64 * t1, ("M", reliable): 64 * t1,
            ("D", reliable): 0.0 if reliable else max(64 * t1, 32.0),
            ("I", reliable): 0.0 if reliable else t4,
            ("J", reliable): 0.0 if reliable else 64 * t1,
            ("K", reliable): 0.0 if reliable else t4,
        })
    return out


def _response_input(status: int, sending: bool) -> str:
    if status < 200:
        return S1XX if sending else R1XX
    if status < 300:
        return S2XX if sending else R2XX
    return SFINAL if sending else RFINAL


class _Txn:
    __slots__ = (
        "ack_data",
        "acked",
        "cancel_pending",
        "cancelled",
        "data",
        "deadlines",
        "dest",
        "interval",
        "kind",
        "merge_key",
        "reliable",
        "request",
        "state",
        "tid",
    )

    def __init__(self, tid: Tid, kind: str, state: str, request: SipRequest, dest: Any,
                 reliable: bool) -> None:
        self.tid = tid
        self.kind = kind
        self.state = state
        self.request = request
        self.dest = dest
        self.reliable = reliable
        self.data = b""          # client: the request; server: the last response sent
        self.ack_data = b""      # INVITE client: the ACK for a non-2xx final response
        self.interval = 0.0      # current retransmission interval
        self.deadlines: dict[str, float] = {}
        self.cancel_pending = False
        self.cancelled = False  # cancel() was called: one CANCEL per INVITE
        self.acked = False
        self.merge_key: tuple[str, str, int, str] | None = None


def server_tid(req: SipRequest) -> Tid:
    """§17.2.3: branch + sent-by + method (ACK matches INVITE), else the RFC 2543 fallback."""
    via = req.via[0]
    method = "INVITE" if req.method == "ACK" else req.method
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return ("s", branch, via.host.lower(), via.port, method)
    return ("s2543", req.call_id, req.from_.tag, req.cseq.number, str(via), str(req.uri),
            method)


def client_tid(branch: str | None, method: str) -> Tid:
    """§17.1.3: top Via branch + CSeq method."""
    return ("c", branch, method)


def _with_method(tid: Tid, method: str) -> Tid:
    return (*tid[:-1], method)


class TransactionLayer:
    """All client and server transactions of one SIP element."""

    def __init__(self, timers: Timers | None = None, max_transactions: int = 65536, *,
                 same_origin: Callable[[Any, Any], bool] = operator.eq) -> None:
        self.timers = timers or Timers()  # a setter: the durations table follows
        # Do two requests' sources (as passed to ``receive``) come from one peer? A CANCEL or
        # ACK matches its INVITE's transaction only from there (RFC 3261 §9.2, §17.2.3): the
        # branch alone is no proof, anyone who saw it could end another trunk's call.
        self._same_origin = same_origin
        self._tag_key = secrets.token_bytes(16)
        self.max_transactions = max_transactions  # beyond this, new requests get a 503
        self._txns: dict[Tid, _Txn] = {}
        self._heap: list[tuple[float, int, Tid, str]] = []
        self._seq = itertools.count()
        self._out: deque[Transmit] = deque()
        self._own: list[SipResponse] = []  # responses the layer sent on its own, for metrics
        self._events: deque[Event] = deque()
        self._accepted: dict[tuple[str, int], Tid] = {}
        # §8.2.2.2: (Call-ID, From, CSeq) of ongoing server transactions of requests without
        # To tag -> their tid, to spot merged requests
        self._merge: dict[tuple[str, str, int, str], Tid] = {}

    @property
    def timers(self) -> Timers:
        return self._timers

    @timers.setter
    def timers(self, timers: Timers) -> None:
        self._timers = timers
        self._durations = timer_durations(timers)

    # ------------------------------------------------------------------ outputs
    def messages_to_send(self) -> list[Transmit]:
        out = list(self._out)
        self._out.clear()
        return out

    def own_responses(self) -> list[SipResponse]:
        """Responses the layer itself sent (100, CANCEL's 200/481, 482, 503) since the last
        call, each once: the TU's responses and retransmissions are not among them."""
        own = self._own
        if own:
            self._own = []
        return own

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, tid, name = heap[0]
            t = self._txns.get(tid)
            if t is not None and t.deadlines.get(name) == when:
                return when
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return len(self._txns)

    def state(self, tid: Tid) -> str | None:
        t = self._txns.get(tid)
        return t.state if t else None

    # ------------------------------------------------------------------ inputs
    def receive(self, msg: SipRequest | SipResponse, source: Any, reliable: bool,
                now: float) -> None:
        """A parsed message from the transport; ``source`` is where responses go back."""
        if isinstance(msg, SipRequest):
            self._receive_request(msg, source, reliable, now)
        else:
            self._receive_response(msg, source, now)

    def send_request(self, request: SipRequest, dest: Any, reliable: bool, now: float) -> Tid:
        """Start a client transaction; the request's top Via must carry a fresh branch."""
        if request.method == "ACK":
            raise ValueError("ACK is sent outside transactions (send it with send_stateless)")
        tid = client_tid(request.branch, request.method)
        if tid in self._txns or not (request.branch or "").startswith(MAGIC_COOKIE):
            raise ValueError("client transaction needs a fresh z9hG4bK branch")
        invite = request.method == "INVITE"
        t = _Txn(tid, ICT if invite else NICT, CALLING if invite else TRYING, request, dest,
                 reliable)
        t.data = request.to_bytes()
        self._txns[tid] = t
        self._send(t.data, dest)
        if not reliable:
            self._start_retransmit(t, "A" if invite else "E", now)
        self._start(t, "B" if invite else "F", now)
        return tid

    def send_stateless(self, data: bytes, dest: Any) -> None:
        """Bytes outside any transaction (ACK for a 2xx, stateless error responses)."""
        self._send(data, dest)

    def send_response(self, tid: Tid, response: SipResponse, now: float) -> bool:
        """Answer server transaction ``tid``; False when it no longer accepts responses."""
        t = self._txns.get(tid)
        if t is None:
            return False
        new = TRANSITIONS.get((t.kind, t.state, _response_input(response.status, True)))
        if new is None:
            return False
        data = response.to_bytes()
        t.data = data
        t.state = new
        self._send(data, t.dest)
        if new == PROCEEDING:
            if t.kind == IST:
                t.deadlines.pop("T100", None)
                self._arm(t, "C", now + TU_INVITE_TIMEOUT)
            return True
        for name in ("C", "Y", "T100"):
            t.deadlines.pop(name, None)
        if t.kind == NIST:
            self._start(t, "J", now)
        elif new == ACCEPTED:
            req = t.request
            self._accepted[(req.call_id, req.cseq.number)] = tid
            if not t.reliable:
                self._start_retransmit(t, "G2", now)
            self._start(t, "L", now)
        else:
            if not t.reliable:
                self._start_retransmit(t, "G", now)
            self._start(t, "H", now)
        return True

    def answer_stateless(self, tid: Tid, response: SipResponse) -> bool:
        """Answer a server transaction's request once and forget the transaction (RFC 3261
        §8.2.7, a stateless UAS): no retransmission until an ACK that a spoofed source never
        sends, so a refusal costs one response per request received, never ten. A
        retransmitted request is a new request and is refused again."""
        t = self._txns.get(tid)
        if (t is None or t.kind not in (IST, NIST) or t.state not in (TRYING, PROCEEDING)
                or response.status < 300):
            return False
        self._send(response.to_bytes(), t.dest)
        self._terminate(t)
        return True

    def forget(self, tid: Tid) -> bool:
        """End a server transaction without answering (a request dropped on purpose)."""
        t = self._txns.get(tid)
        if t is None or t.kind not in (IST, NIST) or t.state not in (TRYING, PROCEEDING):
            return False
        self._terminate(t)
        return True

    def cancel(self, tid: Tid, now: float) -> bool:
        """CANCEL a client INVITE (§9.1): now if a provisional arrived, else once one does."""
        t = self._txns.get(tid)
        if t is None or t.kind != ICT or t.state not in (CALLING, PROCEEDING) or t.cancelled:
            return False
        t.cancelled = True
        if t.state == CALLING:
            t.cancel_pending = True
        else:
            self._send_cancel(t, now)
        return True

    def transport_error(self, tid: Tid, now: float) -> None:
        """The transport failed to deliver a message of ``tid`` (§17.1.4, §17.2.4)."""
        t = self._txns.get(tid)
        if t is not None:
            self._events.append(TransportFailed(tid))
            self._terminate(t)

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, tid, name = heapq.heappop(heap)
            t = self._txns.get(tid)
            if t is None or t.deadlines.get(name) != when:
                continue
            del t.deadlines[name]
            self._fire(t, name, now)

    # ------------------------------------------------------------------ server side
    def _receive_request(self, req: SipRequest, source: Any, reliable: bool, now: float) -> None:
        tid = server_tid(req)
        if req.method == "CANCEL" and not self._cancels_own_invite(tid, source):
            # §9.2: 481, statelessly: a CANCEL from elsewhere must not hold a transaction
            # that would swallow the real one (same branch) as its retransmission
            refused = req.create_response(481, to_tag=self.stateless_tag(tid))
            self._send(refused.to_bytes(), source)
            self._own.append(refused)
            return
        t = self._txns.get(tid)
        if t is not None and not self._same_origin(t.dest, source):
            if req.method != "ACK":
                return  # the branch of another peer's transaction: not a retransmission
            t = None
        if req.method == "ACK":
            new = TRANSITIONS.get((t.kind, t.state, ACK)) if t is not None else None
            if t is not None and new is not None:
                if t.state != new:
                    t.state = new
                    t.deadlines.clear()
                    self._start(t, "I", now)
                return
            key = (req.call_id, req.cseq.number)
            accepted = self._accepted.get(key)
            inv = self._txns.get(accepted) if accepted is not None else None
            if inv is None or self._same_origin(inv.dest, source):
                self._accepted.pop(key, None)
                if inv is not None:
                    inv.acked = True
                    inv.deadlines.pop("G2", None)
            self._events.append(RequestReceived(None, req, source))
            return
        if t is not None:  # a retransmission
            if TRANSITIONS.get((t.kind, t.state, REQUEST)) is not None:
                if t.data:
                    self._send(t.data, t.dest)
                elif t.kind == IST:
                    self._trying(t, now)
            return
        if len(self._txns) >= self.max_transactions:
            busy = req.create_response(503, to_tag=_new_tag())
            busy.headers.add("Retry-After", "5")
            self._send(busy.to_bytes(), source)
            self._own.append(busy)
            return
        invite = req.method == "INVITE"
        t = _Txn(tid, IST if invite else NIST, PROCEEDING if invite else TRYING, req, source,
                 reliable)
        self._txns[tid] = t
        if req.method == "CANCEL":
            self._receive_cancel(t, now)
            return
        headers = req.headers
        if "tag=" not in (headers.get("To") or "").lower():  # surely no To tag: a new request
            # the From field as received stands for its tag: a forked copy carries it unchanged,
            # and reading it raw spares parsing two name-addrs per request
            key = (req.call_id, headers.get("From") or "", req.cseq.number, req.method)
            if key in self._merge:  # refused statelessly, like every refusal before work
                del self._txns[tid]
                merged = req.create_response(482, to_tag=self.stateless_tag(tid))
                self._send(merged.to_bytes(), source)
                self._own.append(merged)
                return
            t.merge_key = key
            self._merge[key] = tid
        if invite:
            self._arm(t, "T100", now + TRYING_DELAY)
            self._arm(t, "C", now + TU_INVITE_TIMEOUT)
        else:
            self._arm(t, "Y", now + 64 * self.timers.t1)
        self._events.append(RequestReceived(tid, req, source))

    def stateless_tag(self, tid: Tid) -> str:
        """The To tag of a refusal sent without a transaction: the same for a retransmission
        (RFC 3261 §8.2.7), unguessable for anyone else."""
        return hmac.new(self._tag_key, repr(tid).encode("utf-8", "surrogateescape"),
                        hashlib.sha256).hexdigest()[:12]

    def _cancels_own_invite(self, tid: Tid, source: Any) -> bool:
        inv = self._txns.get(_with_method(tid, "INVITE"))
        return inv is not None and inv.kind == IST and self._same_origin(inv.dest, source)

    def _receive_cancel(self, t: _Txn, now: float) -> None:
        """§9.2: 200 whenever the INVITE transaction exists (the TU hears of it only while the
        INVITE is unanswered; after a final response the CANCEL has no effect)."""
        inv = self._txns[_with_method(t.tid, "INVITE")]
        self._answer(t.tid, t.request.create_response(200, to_tag=_sent_tag(inv)), now)
        if inv.state == PROCEEDING:
            self._events.append(CancelReceived(inv.tid, t.request, t.dest))

    # ------------------------------------------------------------------ client side
    def _receive_response(self, resp: SipResponse, source: Any, now: float) -> None:
        tid = client_tid(resp.branch, resp.cseq.method)
        t = self._txns.get(tid)
        if t is None:
            self._events.append(ResponseReceived(None, resp, source))
            return
        old = t.state
        new = TRANSITIONS.get((t.kind, old, _response_input(resp.status, False)))
        if new is None:
            return  # absorbed
        t.state = new
        if new == PROCEEDING:
            if t.kind == ICT and old == CALLING:  # (in Proceeding, B is the CANCEL's deadline)
                t.deadlines.pop("A", None)
                t.deadlines.pop("B", None)
                if t.cancel_pending:
                    t.cancel_pending = False
                    self._send_cancel(t, now)
        elif old == new:  # ICT: a 2xx passed up again, or a final response ACKed again
            if new == COMPLETED:
                self._send(t.ack_data, t.dest)
                return
        elif t.kind == NICT:
            t.deadlines.clear()
            self._events.append(ResponseReceived(tid, resp, source))
            self._start(t, "K", now)
            return
        elif new == ACCEPTED:
            t.deadlines.clear()
            self._start(t, "M", now)
        else:
            t.deadlines.clear()
            t.ack_data = _ack_for(t.request, resp).to_bytes()
            self._send(t.ack_data, t.dest)
            self._events.append(ResponseReceived(tid, resp, source))
            self._start(t, "D", now)
            return
        self._events.append(ResponseReceived(tid, resp, source))

    def _send_cancel(self, t: _Txn, now: float) -> None:
        """§9.1: with no final response 64*T1 after the CANCEL, the INVITE is over (timer B's
        outcome), so a callee that ignores the CANCEL cannot hold the transaction forever."""
        self.send_request(_cancel_for(t.request), t.dest, t.reliable, now)
        self._start(t, "B", now)

    # ------------------------------------------------------------------ timers
    def _trying(self, t: _Txn, now: float) -> None:
        self._answer(t.tid, t.request.create_response(100), now)

    def _answer(self, tid: Tid, response: SipResponse, now: float) -> None:
        if self.send_response(tid, response, now):
            self._own.append(response)

    def _fire(self, t: _Txn, name: str, now: float) -> None:
        timers = self.timers
        if name == "T100":
            self._trying(t, now)
        elif name in ("A", "E", "G", "G2"):
            self._send(t.data, t.dest)
            if name == "A":
                t.interval *= 2
            elif name == "E" and t.state == PROCEEDING:
                t.interval = timers.t2
            else:
                t.interval = min(2 * t.interval, timers.t2)
            self._arm(t, name, now + t.interval)
        elif name in ("B", "F"):
            self._events.append(TimedOut(t.tid))
            self._terminate(t)
        elif name == "H":
            self._events.append(AckTimeout(t.tid))
            self._terminate(t)
        elif name == "L":
            if not t.acked:
                self._events.append(AckTimeout(t.tid))
            self._terminate(t)
        else:  # D, I, J, K, M: linger time over; C, Y: the TU never answered
            self._terminate(t)

    def _arm(self, t: _Txn, name: str, when: float) -> None:
        t.deadlines[name] = when
        heap = self._heap
        heapq.heappush(heap, (when, next(self._seq), t.tid, name))
        if len(heap) > 1024 + 8 * len(self._txns):  # mostly cancelled entries: compact
            txns = self._txns
            self._heap = [e for e in heap if (x := txns.get(e[2])) is not None
                          and x.deadlines.get(e[3]) == e[0]]
            heapq.heapify(self._heap)

    def _start(self, t: _Txn, name: str, now: float) -> None:
        """Run timer ``name`` for its Table 4 duration; a zero duration ends the transaction."""
        delay = self._durations[name, t.reliable]
        if delay > 0:
            self._arm(t, name, now + delay)
        else:
            self._terminate(t)

    def _start_retransmit(self, t: _Txn, name: str, now: float) -> None:
        t.interval = self._durations[name, t.reliable]
        self._arm(t, name, now + t.interval)

    def _terminate(self, t: _Txn) -> None:
        if self._txns.pop(t.tid, None) is not None:
            t.deadlines.clear()
            if t.merge_key is not None and self._merge.get(t.merge_key) == t.tid:
                del self._merge[t.merge_key]
            if t.state == ACCEPTED and t.kind == IST:
                key = (t.request.call_id, t.request.cseq.number)
                if self._accepted.get(key) == t.tid:
                    del self._accepted[key]
            self._events.append(Terminated(t.tid))

    def _send(self, data: bytes, dest: Any) -> None:
        self._out.append(Transmit(data, dest))


def _sent_tag(inv: _Txn) -> str:
    """The To tag of the last response an INVITE server transaction sent (§9.2), else new."""
    if inv.data:
        try:
            tag = parse_message(inv.data).to.tag
        except SipParseError:
            tag = None
        if tag:
            return tag
    return _new_tag()


def _ack_for(req: SipRequest, resp: SipResponse) -> SipRequest:
    """§17.1.1.3: the ACK a client INVITE transaction sends for a non-2xx final response."""
    return _same_hop(req, "ACK", resp.headers.get("To") or "")


def _cancel_for(req: SipRequest) -> SipRequest:
    """§9.1: CANCEL with the INVITE's Request-URI, top Via (same branch), Route, From, To."""
    return _same_hop(req, "CANCEL", req.headers.get("To") or "")


def _same_hop(req: SipRequest, method: str, to: str) -> SipRequest:
    """A request that must follow the INVITE hop by hop: its Request-URI, top Via (same
    branch), Route set, From, Call-ID and CSeq number; only the method and To differ."""
    h = Headers()
    h.add("Via", req.headers.values("Via")[0])
    for route in req.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", req.headers.get("From") or "")
    h.add("To", to)
    h.add("Call-ID", req.call_id)
    h.add("CSeq", f"{req.cseq.number} {method}")
    return SipRequest(method, req.uri, h)
