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

import heapq
import itertools
import secrets
from collections import deque
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


class _Txn:
    __slots__ = (
        "ack_data",
        "acked",
        "cancel_pending",
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
        self.acked = False
        self.merge_key: tuple[str, str | None, int, str] | None = None


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

    def __init__(self, timers: Timers | None = None, max_transactions: int = 65536) -> None:
        self.timers = timers or Timers()
        self.max_transactions = max_transactions  # beyond this, new requests get a 503
        self._txns: dict[Tid, _Txn] = {}
        self._heap: list[tuple[float, int, Tid, str]] = []
        self._seq = itertools.count()
        self._out: deque[Transmit] = deque()
        self._events: deque[Event] = deque()
        self._accepted: dict[tuple[str, int], Tid] = {}
        # §8.2.2.2: (Call-ID, From tag, CSeq) of ongoing server transactions of requests
        # without To tag -> their tid, to spot merged requests
        self._merge: dict[tuple[str, str | None, int, str], Tid] = {}

    # ------------------------------------------------------------------ outputs
    def messages_to_send(self) -> list[Transmit]:
        out = list(self._out)
        self._out.clear()
        return out

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
        t1 = self.timers.t1
        if not reliable:
            t.interval = t1
            self._arm(t, "A" if invite else "E", now + t1)
        self._arm(t, "B" if invite else "F", now + 64 * t1)
        return tid

    def send_stateless(self, data: bytes, dest: Any) -> None:
        """Bytes outside any transaction (ACK for a 2xx, stateless error responses)."""
        self._send(data, dest)

    def send_response(self, tid: Tid, response: SipResponse, now: float) -> bool:
        """Answer server transaction ``tid``; False when it no longer accepts responses."""
        t = self._txns.get(tid)
        if t is None or t.kind not in (IST, NIST):
            return False
        status = response.status
        if t.kind == IST:
            if t.state != PROCEEDING:
                return False
        elif t.state not in (TRYING, PROCEEDING):
            return False
        data = response.to_bytes()
        t.data = data
        self._send(data, t.dest)
        t1 = self.timers.t1
        if status < 200:
            t.state = PROCEEDING
            if t.kind == IST:
                t.deadlines.pop("T100", None)
                self._arm(t, "C", now + TU_INVITE_TIMEOUT)
            return True
        for name in ("C", "Y", "T100"):
            t.deadlines.pop(name, None)
        if t.kind == NIST:
            t.state = COMPLETED
            self._arm_or_end(t, "J", now, 0 if t.reliable else 64 * t1)
        elif status < 300:
            t.state = ACCEPTED
            req = t.request
            self._accepted[(req.call_id, req.cseq.number)] = tid
            if not t.reliable:
                t.interval = t1
                self._arm(t, "G2", now + t1)
            self._arm(t, "L", now + 64 * t1)
        else:
            t.state = COMPLETED
            if not t.reliable:
                t.interval = t1
                self._arm(t, "G", now + t1)
            self._arm(t, "H", now + 64 * t1)
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
        if t is None or t.kind != ICT or t.state not in (CALLING, PROCEEDING):
            return False
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
        t = self._txns.get(tid)
        if req.method == "ACK":
            if t is not None and t.kind == IST and t.state in (COMPLETED, CONFIRMED):
                if t.state == COMPLETED:
                    t.state = CONFIRMED
                    t.deadlines.clear()
                    self._arm_or_end(t, "I", now, 0 if t.reliable else self.timers.t4)
                return
            accepted = self._accepted.pop((req.call_id, req.cseq.number), None)
            if accepted is not None:
                inv = self._txns.get(accepted)
                if inv is not None:
                    inv.acked = True
                    inv.deadlines.pop("G2", None)
            self._events.append(RequestReceived(None, req, source))
            return
        if t is not None:
            if t.kind == IST and t.state == PROCEEDING and not t.data:
                self._trying(t, now)
            elif t.state in (PROCEEDING, COMPLETED) and t.data:
                self._send(t.data, t.dest)
            return
        if len(self._txns) >= self.max_transactions:
            busy = req.create_response(503, to_tag=_new_tag())
            busy.headers.add("Retry-After", "5")
            self._send(busy.to_bytes(), source)
            return
        invite = req.method == "INVITE"
        t = _Txn(tid, IST if invite else NIST, PROCEEDING if invite else TRYING, req, source,
                 reliable)
        self._txns[tid] = t
        if req.method == "CANCEL":
            self._receive_cancel(t, now)
            return
        if req.to.tag is None:
            key = (req.call_id, req.from_.tag, req.cseq.number, req.method)
            if key in self._merge:
                self.send_response(tid, req.create_response(482, to_tag=_new_tag()), now)
                return
            t.merge_key = key
            self._merge[key] = tid
        if invite:
            self._arm(t, "T100", now + TRYING_DELAY)
            self._arm(t, "C", now + TU_INVITE_TIMEOUT)
        else:
            self._arm(t, "Y", now + 64 * self.timers.t1)
        self._events.append(RequestReceived(tid, req, source))

    def _receive_cancel(self, t: _Txn, now: float) -> None:
        """§9.2: 200 whenever the INVITE transaction exists (the TU hears of it only while the
        INVITE is unanswered; after a final response the CANCEL has no effect), else 481."""
        inv = self._txns.get(_with_method(t.tid, "INVITE"))
        if inv is None or inv.kind != IST:
            self.send_response(t.tid, t.request.create_response(481, to_tag=_new_tag()), now)
            return
        self.send_response(t.tid, t.request.create_response(200, to_tag=_sent_tag(inv)), now)
        if inv.state == PROCEEDING:
            self._events.append(CancelReceived(inv.tid, t.request, t.dest))

    # ------------------------------------------------------------------ client side
    def _receive_response(self, resp: SipResponse, source: Any, now: float) -> None:
        tid = client_tid(resp.branch, resp.cseq.method)
        t = self._txns.get(tid)
        if t is None:
            self._events.append(ResponseReceived(None, resp, source))
            return
        status = resp.status
        active = t.state in (CALLING, TRYING, PROCEEDING)
        if status < 200:
            if not active:
                return
            t.state = PROCEEDING
            if t.kind == ICT:
                t.deadlines.pop("A", None)
                t.deadlines.pop("B", None)
                if t.cancel_pending:
                    t.cancel_pending = False
                    self._send_cancel(t, now)
            self._events.append(ResponseReceived(tid, resp, source))
            return
        if t.kind == NICT:
            if active:
                t.state = COMPLETED
                t.deadlines.clear()
                self._events.append(ResponseReceived(tid, resp, source))
                self._arm_or_end(t, "K", now, 0 if t.reliable else self.timers.t4)
            return
        if status < 300:
            if active:
                t.state = ACCEPTED
                t.deadlines.clear()
                self._arm(t, "M", now + 64 * self.timers.t1)
            if t.state == ACCEPTED:
                self._events.append(ResponseReceived(tid, resp, source))
            return
        if active:
            t.state = COMPLETED
            t.deadlines.clear()
            t.ack_data = _ack_for(t.request, resp).to_bytes()
            self._send(t.ack_data, t.dest)
            self._events.append(ResponseReceived(tid, resp, source))
            self._arm_or_end(t, "D", now, 0 if t.reliable else max(64 * self.timers.t1, 32.0))
        elif t.state == COMPLETED:
            self._send(t.ack_data, t.dest)

    def _send_cancel(self, t: _Txn, now: float) -> None:
        """§9.1: with no final response 64*T1 after the CANCEL, the INVITE is over (timer B's
        outcome), so a callee that ignores the CANCEL cannot hold the transaction forever."""
        self.send_request(_cancel_for(t.request), t.dest, t.reliable, now)
        self._arm(t, "B", now + 64 * self.timers.t1)

    # ------------------------------------------------------------------ timers
    def _trying(self, t: _Txn, now: float) -> None:
        self.send_response(t.tid, t.request.create_response(100), now)

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
            req = t.request
            self._accepted.pop((req.call_id, req.cseq.number), None)
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

    def _arm_or_end(self, t: _Txn, name: str, now: float, delay: float) -> None:
        if delay > 0:
            self._arm(t, name, now + delay)
        else:
            self._terminate(t)

    def _terminate(self, t: _Txn) -> None:
        if self._txns.pop(t.tid, None) is not None:
            t.deadlines.clear()
            if t.merge_key is not None and self._merge.get(t.merge_key) == t.tid:
                del self._merge[t.merge_key]
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
    h = Headers()
    h.add("Via", req.headers.values("Via")[0])
    for route in req.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", req.headers.get("From") or "")
    h.add("To", resp.headers.get("To") or "")
    h.add("Call-ID", req.call_id)
    h.add("CSeq", f"{req.cseq.number} ACK")
    return SipRequest("ACK", req.uri, h)


def _cancel_for(req: SipRequest) -> SipRequest:
    """§9.1: CANCEL with the INVITE's Request-URI, top Via (same branch), Route, From, To."""
    h = Headers()
    h.add("Via", req.headers.values("Via")[0])
    for route in req.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", req.headers.get("From") or "")
    h.add("To", req.headers.get("To") or "")
    h.add("Call-ID", req.call_id)
    h.add("CSeq", f"{req.cseq.number} CANCEL")
    return SipRequest("CANCEL", req.uri, h)
