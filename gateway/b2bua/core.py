"""The B2BUA's shared state and the one way a call ends.

Every flow (new INVITEs, in-dialog requests, OPTIONS) works on the same call table, media
bridges and pending transactions; keeping them and ``_end`` in one place means every path that
ends a call — BYE, CANCEL, failure, timeouts, drain — closes the media session and forgets the
dialogs the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway.b2bua.call import Call, CallState, EndReason, Leg
from gateway.b2bua.dialog import request
from gateway.b2bua.media import DtlsContext, MediaBridge
from gateway.b2bua.registrar import Registrar
from gateway.b2bua.status import Extra, reply, sdp_warning, teardown_status
from gateway.config import Config, HostPort, Trunk
from gateway.media.api import MediaRelayApi
from gateway.ops.log import get_logger
from gateway.policy.acl import Acl, Source
from gateway.sdp.errors import SdpError
from gateway.sip.errors import SipError
from gateway.sip.events import Tid
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.stack import ClientTransaction, SipStack
from gateway.sip.transport import MessageSource, Target

log = get_logger("b2bua")

RING_TIMEOUT = 170.0   # below the stack's 180 s timer C, so the caller still gets our answer


class PendingInvite:
    """An INVITE server transaction on leg A waiting for the outcome on leg B."""

    __slots__ = ("call", "client", "closed", "request", "tid")

    def __init__(self, call: Call, request: SipRequest, tid: Tid) -> None:
        self.call = call
        self.request = request
        self.tid = tid
        self.client: ClientTransaction | None = None
        self.closed = False


class CallCore:
    """State every flow shares, the SIP primitives they send with, and call teardown."""

    def __init__(self, config: Config, sip: SipStack, relay: MediaRelayApi, *,
                 clock: Callable[[], float] | None = None,
                 on_call_end: Callable[[Call], None] | None = None,
                 dtls: DtlsContext | None = None) -> None:
        self.config = config
        self._acl = Acl(config)   # the firewall's classifier: one rule for both
        self.dtls = dtls
        self.sip = sip
        self.relay = relay
        self.calls: dict[str, Call] = {}
        self.accepting = True                      # False while draining: new INVITEs get 503
        self.drain_until: float | None = None      # clock time the drain ends (Retry-After)
        self.ring_timeout = RING_TIMEOUT           # longest wait for the callee's next response
        self._clock = clock or asyncio.get_running_loop().time
        self._on_call_end = on_call_end
        self._dialogs: dict[tuple[str, str], tuple[Call, Leg]] = {}
        self._invites: dict[Tid, PendingInvite] = {}   # A-leg INVITE transactions still open
        self._media: dict[str, MediaBridge] = {}   # call id -> its media
        self._by_session: dict[str, Call] = {}     # relay session id -> call
        self._tasks: set[asyncio.Task[Any]] = set()
        self._acks: dict[str, asyncio.Future[SipRequest]] = {}  # call id -> awaited ACK
        self._unacked: dict[Tid, Call] = {}        # our 2xx to the caller, ACK not yet seen
        self._unacked_tid: dict[str, Tid] = {}     # call id -> its entry in _unacked
        self._per_trunk: Counter[str] = Counter()  # live calls per trunk name (max_calls)
        self._late_acks: set[str] = set()          # late offer: B's ACK waits for A's answer
        self._late_answers: dict[str, tuple[int, bytes]] = {}  # late offer: CSeq, answer in B's ACK
        self.counters: Counter[str] = Counter()
        self.registrar = Registrar(config.registrar)   # bindings of trunks with registrar

    def classify(self, src: MessageSource) -> Trunk | None:
        """The trunk a source belongs to: the firewall's own classifier (policy.acl.Acl)."""
        return self._acl.classify(Source(src.listener, src.transport, src.ip, src.port,
                                         src.tls_identities, src.tls_fingerprint))

    # ------------------------------------------------------------------ why calls end
    def on_media_timeout(self, session_id: str, stream: int) -> None:
        """The relay saw no media on a stream for its inactivity timeout."""
        call = self._by_session.get(session_id)
        if call is None:
            return
        if call.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            # a call may ring for longer than the media timeout without early media; the
            # relay will not report this stream again, so the answer re-checks it
            bridge = self._media.get(call.id)
            if bridge is not None:
                bridge.media_idle(stream, self._clock())
            return
        # a trunk that opts out (long silences, fax) keeps its calls whatever the other says
        if call.a.trunk.end_call_on_media_timeout and call.b.trunk.end_call_on_media_timeout:
            log.info("call.media_timeout", call=call.id, stream=stream)
            self._end(call, EndReason.MEDIA_TIMEOUT)

    def _media_failed(self, call: Call, reason: str) -> None:
        """A stream's key exchange failed (DTLS): the call cannot carry media, end it."""
        if call.active:
            log.info("call.media_failed", call=call.id, reason=reason)
            self._end(call, EndReason.ERROR)

    def _end(self, call: Call, reason: EndReason, *, bye: bool = True) -> None:
        """Tear a call down on every path: BYE confirmed legs, free media, forget dialogs."""
        if call.state == CallState.ENDED:
            return
        was = call.state
        call.state = CallState.ENDED
        call.end_reason = reason
        call.ended_at = self._clock()
        if self.calls.pop(call.id, None) is not None:
            for name in self._trunks(call):
                self._per_trunk[name] -= 1
        self._dialogs.pop((call.a.call_id, call.a.local_tag), None)
        self._dialogs.pop((call.b.call_id, call.b.local_tag), None)
        self._late_answers.pop(call.id, None)
        ack = self._acks.pop(call.id, None)
        if ack is not None and not ack.done():
            ack.cancel()
        self._forget_unacked(call)
        status = teardown_status(reason)
        for inv in [i for i in self._invites.values() if i.call is call and not i.closed]:
            self._answer_a(inv, status)
            if inv.client is not None:
                inv.client.cancel()
        bridge = self._media.pop(call.id, None)
        if bridge is not None:
            if bridge.session_id is not None:
                self._by_session.pop(bridge.session_id, None)
            self._spawn(bridge.close())
        if bye and was in (CallState.ANSWERED, CallState.CONFIRMED):
            skip = {EndReason.CALLER_BYE: call.a, EndReason.CALLEE_BYE: call.b}.get(reason)
            for leg in (call.a, call.b):
                if leg is not skip and leg.remote_tag is not None:
                    self._spawn(self._bye(leg))
        self.counters[f"ended.{reason.value}"] += 1
        log.info("call.end", call=call.id, reason=reason.value, a=call.a.trunk.name,
                 b=call.b.trunk.name,
                 duration=round(call.ended_at - (call.answered_at or call.ended_at), 3))
        if self._on_call_end is not None:
            self._on_call_end(call)

    # ------------------------------------------------------------------ call table
    def active_calls(self, trunk: str | None = None) -> int:
        """Live calls, or those with a leg on ``trunk``: kept as counts, since every new
        INVITE asks (a scan of the call table per INVITE grew with the load)."""
        return len(self.calls) if trunk is None else self._per_trunk[trunk]

    def dialog_leg(self, call_id: str, local_tag: str,
                   remote_tag: str | None) -> tuple[Call, Leg] | None:
        """The call and leg whose dialog is (Call-ID, our tag, the peer's tag): both tags must
        match (RFC 3261 §12.2.2), or a request that guessed our tag alone could end the call."""
        found = self._dialogs.get((call_id, local_tag))
        if found is None or found[1].remote_tag != remote_tag:
            return None
        return found

    def has_dialog(self, call_id: str, local_tag: str, remote_tag: str | None) -> bool:
        """Is this a dialog of a live call? The firewall's in-dialog test."""
        return self.dialog_leg(call_id, local_tag, remote_tag) is not None

    @staticmethod
    def _trunks(call: Call) -> set[str]:
        return {call.a.trunk.name, call.b.trunk.name}

    def _register(self, call: Call) -> None:
        self.calls[call.id] = call
        for name in self._trunks(call):
            self._per_trunk[name] += 1
        self._dialogs[(call.a.call_id, call.a.local_tag)] = (call, call.a)
        self._dialogs[(call.b.call_id, call.b.local_tag)] = (call, call.b)

    def _forget_unacked(self, call: Call) -> None:
        tid = self._unacked_tid.pop(call.id, None)
        if tid is not None:
            self._unacked.pop(tid, None)

    # ------------------------------------------------------------------ sending
    def _client(self, req: SipRequest, trunk: Trunk, dest: HostPort) -> ClientTransaction:
        return self.sip.client(req, Target.from_trunk(trunk, dest))

    def _ack(self, ack: SipRequest, trunk: Trunk, dest: HostPort) -> None:
        self.sip.send_ack(ack, Target.from_trunk(trunk, dest))

    @staticmethod
    def _leg_target(leg: Leg) -> Target:
        """Where a request on an established leg goes: its connection while open, else
        its peer (RFC 3261 §18.2.2, RFC 5923)."""
        return Target.from_trunk(leg.trunk, leg.peer, leg.connection)

    def _leg_client(self, req: SipRequest, leg: Leg) -> ClientTransaction:
        return self.sip.client(req, self._leg_target(leg))

    def _leg_ack(self, ack: SipRequest, leg: Leg) -> None:
        self.sip.send_ack(ack, self._leg_target(leg))

    def _reply(self, tid: Tid, req: SipRequest, status: int, *, leg: Leg | None = None,
               body: bytes = b"", extra: Extra | None = None) -> None:
        self.sip.respond(tid, reply(req, status, self.config.gateway.user_agent, leg=leg,
                                    body=body, extra=extra))

    def _refuse(self, tid: Tid, req: SipRequest, status: int, *,
                extra: Extra | None = None) -> None:
        """Refuse a new request before any work for it: one stateless answer (RFC 3261
        §8.2.7), so a spoofed source cannot make us retransmit an INVITE's refusal."""
        self.sip.respond_stateless(tid, reply(req, status, self.config.gateway.user_agent,
                                              extra=extra, to_tag=self.sip.stateless_tag(req)))

    def _answer_a(self, inv: PendingInvite, status: int, body: bytes = b"",
                  extra: Extra | None = None) -> None:
        if inv.closed:
            return
        inv.closed = status >= 200
        if inv.closed:
            inv.call.final_status = status
        self._reply(inv.tid, inv.request, status, leg=inv.call.a, body=body, extra=extra)

    def _warning(self, exc: SdpError, trunk: Trunk) -> Extra:
        """A Warning on a refusal tells the phone why, and a scanner what we check: only on
        trunks that ask for it (``refusal_warnings``)."""
        return sdp_warning(exc, self.config.gateway.name) if trunk.refusal_warnings else []

    async def _bye(self, leg: Leg) -> None:
        req = request(leg, "BYE", user_agent=self.config.gateway.user_agent)
        with contextlib.suppress(SipError):
            await self._final(self._leg_client(req, leg))

    async def _final(self, client: ClientTransaction) -> SipResponse:
        while True:
            resp = await client.response()
            if resp.status >= 200:
                return resp

    # ------------------------------------------------------------------ tasks
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.counters["internal_errors"] += 1
            log.error("b2bua.task_failed", error=type(exc).__name__, detail=str(exc)[:200])
