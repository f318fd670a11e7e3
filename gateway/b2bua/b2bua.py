"""The back-to-back user agent: every call is two independent dialogs and one media session.

Requests arrive from the SIP stack (after the firewall) through ``handle``,
``handle_cancel`` and ``handle_ack_timeout``; the B2BUA answers on the same leg and, where the
request means something to the other side, re-originates it there from that leg's own dialog
state. Each INVITE and each relayed in-dialog request runs as one task; every path that ends a
call goes through ``_end``, which closes the media session and forgets the dialogs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from gateway.b2bua.call import Call, CallState, EndReason, Leg, expired, new_token
from gateway.b2bua.dialog import learn_response, refresh_target, request, response, without_tag
from gateway.b2bua.legs import callee_leg, callee_ruri, caller_leg, caller_peer, route_request
from gateway.b2bua.media import DtlsContext, MediaBridge, dtls_context
from gateway.b2bua.routing import Routed
from gateway.b2bua.status import (
    ACCEPT,
    ALLOW,
    RELAYED,
    RETRY_AFTER,
    SUPPORTED,
    Extra,
    is_sdp,
    out_of_dialog_status,
    reason,
    relayed_status,
    reply,
    teardown_status,
)
from gateway.b2bua.topology import copy_headers, unsupported_required
from gateway.config import Config, HostPort, Trunk
from gateway.media.api import MediaError, MediaRelayApi, PortsExhausted
from gateway.ops.log import get_logger
from gateway.policy.acl import Acl, Source
from gateway.sdp.errors import SdpError
from gateway.sip.errors import SipError, TransactionTimeout
from gateway.sip.events import Tid
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.stack import ClientTransaction, IncomingRequest, SipStack
from gateway.sip.transport import MessageSource, Target

log = get_logger("b2bua")

RING_TIMEOUT = 170.0   # below the stack's 180 s timer C, so the caller still gets our answer


class _Invite:
    """An INVITE server transaction on leg A waiting for the outcome on leg B."""

    __slots__ = ("call", "client", "closed", "request", "tid")

    def __init__(self, call: Call, request: SipRequest, tid: Tid) -> None:
        self.call = call
        self.request = request
        self.tid = tid
        self.client: ClientTransaction | None = None
        self.closed = False


class B2bua:
    """Calls between trunks. ``calls`` is the live table (ops reads it for status and drain)."""

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
        self._invites: dict[Tid, _Invite] = {}     # A-leg INVITE transactions still open
        self._media: dict[str, MediaBridge] = {}   # call id -> its media
        self._by_session: dict[str, Call] = {}     # relay session id -> call
        self._tasks: set[asyncio.Task[Any]] = set()
        self._acks: dict[str, asyncio.Future[SipRequest]] = {}  # call id -> awaited ACK
        self._unacked: dict[Tid, Call] = {}        # our 2xx to the caller, ACK not yet seen
        self._unacked_tid: dict[str, Tid] = {}     # call id -> its entry in _unacked
        self._per_trunk: Counter[str] = Counter()  # live calls per trunk name (max_calls)
        self._late_acks: set[str] = set()          # late offer: B's ACK waits for A's answer
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ public inputs
    def reload(self, config: Config, dtls: DtlsContext | None = None) -> None:
        """New trunks and routes apply to new calls; live calls keep the trunks they began with.

        The DTLS certificate is read again (it may have been rotated) before anything changes,
        so a bad one fails the reload (DtlsIdentityError) and leaves the B2BUA as it was.
        ``dtls``: the context a caller already loaded from ``config`` (ops loads everything
        that can fail before it swaps anything)."""
        self.dtls = dtls if dtls is not None else dtls_context(config)
        self._acl = Acl(config)
        self.config = config

    def active_calls(self, trunk: str | None = None) -> int:
        """Live calls, or those with a leg on ``trunk``: kept as counts, since every new
        INVITE asks (a scan of the call table per INVITE grew with the load)."""
        return len(self.calls) if trunk is None else self._per_trunk[trunk]

    def has_dialog(self, call_id: str, local_tag: str) -> bool:
        """Is (Call-ID, our tag) a dialog of a live call? The firewall's in-dialog test."""
        return (call_id, local_tag) in self._dialogs

    def classify(self, src: MessageSource) -> Trunk | None:
        """The trunk a source belongs to: the firewall's own classifier (policy.acl.Acl)."""
        return self._acl.classify(Source(src.listener, src.transport, src.ip, src.port,
                                         src.tls_identities, src.tls_fingerprint))

    def handle(self, incoming: IncomingRequest, trunk: Trunk | None = None) -> None:
        """A request from the stack; ``trunk`` is the firewall's verdict (else we classify)."""
        src = incoming.source
        if trunk is None:
            trunk = self.classify(src)
        req, tid = incoming.request, incoming.tid
        if trunk is None:
            if tid is not None and not incoming.cancels and \
                    self.config.firewall.unknown_source == "403":
                self._reply(tid, req, 403)
            return
        if incoming.cancels:
            if tid is not None:
                self.handle_cancel(tid)
            return
        to_tag = req.to.tag
        if to_tag is not None:
            self._in_dialog(req, tid, trunk, to_tag)
        elif req.method == "ACK" or tid is None:
            return
        elif req.method == "INVITE":
            self._new_invite(req, tid, trunk, caller_peer(trunk, src))
        elif req.method == "OPTIONS":
            self._options(req, tid, trunk)
        else:
            self._reply(tid, req, out_of_dialog_status(req.method), extra=[("Allow", ALLOW)])

    def handle_stray_response(self, resp: SipResponse, source: MessageSource) -> None:
        """A 2xx to an INVITE after its transaction finished: re-ACK it; a 2xx from a fork we
        did not pick (or for a call that is over) is ACKed and then ended with BYE."""
        if not 200 <= resp.status < 300 or resp.cseq.method != "INVITE":
            return
        tag = resp.from_.tag or ""
        found = self._dialogs.get((resp.call_id, tag))
        if found is not None and found[1].remote_tag == resp.to.tag:
            if found[0].id in self._late_acks:
                return      # our ACK (with the caller's answer) is still to come
            leg = found[1]
            self._ack(request(leg, "ACK", cseq=resp.cseq.number,
                              user_agent=self.config.gateway.user_agent), leg.trunk, leg.peer)
            return
        trunk = self.classify(source)
        if trunk is None:
            return
        stray = Leg(trunk=trunk, call_id=resp.call_id, local_tag=tag,
                    local_uri=without_tag(resp.headers.get("From") or "", "From"),
                    remote_uri=without_tag(resp.headers.get("To") or "", "To"),
                    peer=trunk.peer, contact=self.sip.contact(trunk.listener),
                    local_cseq=resp.cseq.number)
        learn_response(stray, resp)
        self.counters["stray_2xx"] += 1
        self._ack(request(stray, "ACK", cseq=resp.cseq.number), trunk, trunk.peer)
        self._spawn(self._bye(stray))

    def handle_cancel(self, tid: Tid) -> None:
        """The caller CANCELled its INVITE (the stack already answered the CANCEL with 200)."""
        inv = self._invites.get(tid)
        if inv is None or inv.closed:
            return
        self.counters["cancelled"] += 1
        self._answer_a(inv, 487)
        if inv.client is not None:
            inv.client.cancel()
        self._end(inv.call, EndReason.CANCELLED, bye=False)

    def handle_ack_timeout(self, tid: Tid) -> None:
        """Our 2xx to the caller was never ACKed: the call cannot stand."""
        call = self._unacked.pop(tid, None)
        if call is None:
            return
        self._unacked_tid.pop(call.id, None)
        if call.state == CallState.ANSWERED:
            self._end(call, EndReason.NO_ACK)

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

    async def sweep(self, now: float | None = None) -> list[str]:
        """End calls with neither signalling nor media for ``sip.session_expires`` seconds.

        Media counts as activity: a long call whose phones never refresh the session must not
        be cut while it carries audio. Returns the ids of the calls ended.
        """
        now = self._clock() if now is None else now
        limit = self.config.sip.session_expires
        gone = []
        for call in expired(list(self.calls.values()), now, limit):
            bridge = self._media.get(call.id)
            if bridge is not None and bridge.session_id is not None:
                with contextlib.suppress(MediaError):
                    stats = await self.relay.stats(bridge.session_id)
                    last = max((s.last_packet or 0.0 for leg in stats.legs for s in leg),
                               default=0.0)
                    if now - last <= limit:
                        call.touch(last)
                        continue
            if call.active:
                self._end(call, EndReason.SESSION_EXPIRED)
                gone.append(call.id)
        return gone

    def hangup_all(self, reason: EndReason = EndReason.SHUTDOWN) -> None:
        """BYE (or 503/CANCEL) every call: shutdown and the end of a drain."""
        for inv in list(self._invites.values()):
            if inv.call.state in (CallState.INVITING, CallState.EARLY) and not inv.closed:
                self._answer_a(inv, 503)
                if inv.client is not None:
                    inv.client.cancel()
        for call in list(self.calls.values()):
            self._end(call, reason)

    async def close(self) -> None:
        """Stop: end every call, wait briefly for the BYEs, cancel what is left."""
        self.accepting = False
        self.hangup_all()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        for bridge in list(self._media.values()):
            await bridge.close()
        self._media.clear()

    # ------------------------------------------------------------------ helpers
    def _client(self, req: SipRequest, trunk: Trunk, dest: HostPort) -> ClientTransaction:
        return self.sip.client(req, Target.from_trunk(trunk, dest))

    def _ack(self, ack: SipRequest, trunk: Trunk, dest: HostPort) -> None:
        self.sip.send_ack(ack, Target.from_trunk(trunk, dest))

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

    def _reply(self, tid: Tid, req: SipRequest, status: int, *, leg: Leg | None = None,
               body: bytes = b"", extra: Extra | None = None) -> None:
        self.sip.respond(tid, reply(req, status, self.config.gateway.user_agent, leg=leg,
                                    body=body, extra=extra))

    def _answer_a(self, inv: _Invite, status: int, body: bytes = b"",
                  extra: Extra | None = None) -> None:
        if inv.closed:
            return
        inv.closed = status >= 200
        self._reply(inv.tid, inv.request, status, leg=inv.call.a, body=body, extra=extra)

    def _retry_after(self) -> str:
        """Seconds until a drain ends (this gateway then stops), else the usual 30."""
        if self.drain_until is None:
            return RETRY_AFTER
        return str(max(1, math.ceil(self.drain_until - self._clock())))

    def _forget_unacked(self, call: Call) -> None:
        tid = self._unacked_tid.pop(call.id, None)
        if tid is not None:
            self._unacked.pop(tid, None)

    @staticmethod
    def _trunks(call: Call) -> set[str]:
        return {call.a.trunk.name, call.b.trunk.name}

    def _register(self, call: Call) -> None:
        self.calls[call.id] = call
        for name in self._trunks(call):
            self._per_trunk[name] += 1
        self._dialogs[(call.a.call_id, call.a.local_tag)] = (call, call.a)
        self._dialogs[(call.b.call_id, call.b.local_tag)] = (call, call.b)

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

    async def _bye(self, leg: Leg) -> None:
        req = request(leg, "BYE", user_agent=self.config.gateway.user_agent)
        with contextlib.suppress(SipError):
            await self._final(self._client(req, leg.trunk, leg.peer))

    async def _final(self, client: ClientTransaction) -> SipResponse:
        while True:
            resp = await client.response()
            if resp.status >= 200:
                return resp

    # ------------------------------------------------------------------ OPTIONS
    def _options(self, req: SipRequest, tid: Tid, trunk: Trunk) -> None:
        if trunk.answer_options or not (routed := route_request(self.config, req, trunk)):
            self._reply(tid, req, 200, extra=[("Allow", ALLOW), ("Accept", ACCEPT)])
            return
        self._spawn(self._relay_options(req, tid, trunk, routed))

    async def _relay_options(self, req: SipRequest, tid: Tid, src: Trunk,
                             routed: Routed) -> None:
        dst = routed.trunk
        leg = callee_leg(req, dst, routed.user, self.config.gateway.domain,
                         self.sip.contact(dst.listener))
        out = request(leg, "OPTIONS", ruri=callee_ruri(dst, routed.user),
                      extra=copy_headers(req.headers, src, dst, self.config.gateway.domain),
                      user_agent=self.config.gateway.user_agent)
        try:
            resp = await self._final(self._client(out, dst, dst.peer))
            status = relayed_status(resp.status)
        except TransactionTimeout:
            status = 408
        except SipError:
            status = 503
        self._reply(tid, req, status, extra=[("Allow", ALLOW)] if status == 200 else None)

    # ------------------------------------------------------------------ new calls
    def _new_invite(self, req: SipRequest, tid: Tid, trunk: Trunk, source: HostPort) -> None:
        if not self.accepting:
            self._reply(tid, req, 503, extra=[("Retry-After", self._retry_after())])
            return
        if req.method not in trunk.methods:
            self._reply(tid, req, 405, extra=[("Allow", ALLOW)])
            return
        if req.max_forwards == 0:
            self._reply(tid, req, 483)
            return
        unsupported = unsupported_required(req.headers, SUPPORTED)
        if unsupported:
            self._reply(tid, req, 420, extra=[("Unsupported", ", ".join(unsupported))])
            return
        if req.body and not is_sdp(req):
            self._reply(tid, req, 415, extra=[("Accept", ACCEPT)])
            return
        routed = route_request(self.config, req, trunk)
        if routed is None:
            self._reply(tid, req, trunk.no_route_status)
            return
        dst = routed.trunk
        for t in (trunk, dst):
            if self.active_calls(t.name) >= t.max_calls:
                self.counters["rejected.max_calls"] += 1
                self._reply(tid, req, 503, extra=[("Retry-After", RETRY_AFTER)])
                return
        now = self._clock()
        a = caller_leg(req, trunk, source, self.sip.contact(trunk.listener))
        b = callee_leg(req, dst, routed.user, self.config.gateway.domain,
                       self.sip.contact(dst.listener))
        call = Call(id=new_token(8), a=a, b=b, created=now, last_activity=now)
        inv = _Invite(call, req, tid)
        self._invites[tid] = inv
        self._register(call)
        self.counters["calls.started"] += 1
        log.info("call.start", call=call.id, a=trunk.name, b=dst.name)
        self._spawn(self._run_invite(inv, routed.user))

    async def _run_invite(self, inv: _Invite, user: str) -> None:
        call = inv.call
        try:
            await self._invite_b(inv, user)
        finally:
            self._invites.pop(inv.tid, None)
            if call.state in (CallState.INVITING, CallState.EARLY):
                self._end(call, EndReason.ERROR, bye=False)

    async def _invite_b(self, inv: _Invite, user: str) -> None:
        call, req = inv.call, inv.request
        src, dst = call.a.trunk, call.b.trunk
        try:
            bridge = MediaBridge(self.relay, src, dst, self.config.media.sdp_address,
                                 dtls=self.dtls,
                                 on_failed=lambda reason: self._media_failed(call, reason),
                                 media=(call.a.media, call.b.media))
        except SdpError as exc:
            self._fail(inv, exc.status, f"sdp: {exc.reason}")
            return
        self._media[call.id] = bridge
        late = not is_sdp(req)   # no offer: the callee offers in its 2xx, the caller answers
        body = b""
        if not late:
            offer = await self._offer(inv, bridge, 0, req.body)
            if offer is None:
                return
            body = offer
        if inv.closed:
            return
        out = request(call.b, "INVITE", ruri=callee_ruri(dst, user), body=body,
                      extra=copy_headers(req.headers, src, dst, self.config.gateway.domain),
                      user_agent=self.config.gateway.user_agent)
        cseq = call.b.local_cseq
        try:
            client = self._client(out, dst, dst.peer)
        except SipError:
            self._fail(inv, 503, "destination unreachable")
            return
        inv.client = client
        while True:
            try:
                # a timeout scope, not wait_for: no extra task per response
                async with asyncio.timeout(self.ring_timeout):
                    resp = await client.response()
            except TimeoutError:
                # no progress from the callee for longer than the caller's INVITE transaction
                # lives (the stack's timer C): give up on both legs with a final answer
                client.cancel()
                if not inv.closed:
                    self._fail(inv, 408, "callee gave no final response")
                return
            except TransactionTimeout:
                if not inv.closed:
                    self._fail(inv, 408, "destination timed out")
                return
            except SipError:
                if not inv.closed:
                    self._fail(inv, 503, "destination unreachable")
                return
            if resp.status < 200:
                if resp.status > 100 and not inv.closed:
                    await self._provisional(inv, bridge, resp)
                continue
            if resp.status < 300:
                if late:
                    await self._answered_late(inv, bridge, resp, cseq)
                else:
                    await self._answered(inv, bridge, resp, cseq)
            elif not inv.closed:
                status = relayed_status(resp.status)
                extra = [("Retry-After", RETRY_AFTER)] if status == 503 else None
                self._fail(inv, status, "rejected by callee", extra)
            return

    async def _offer(self, inv: _Invite, bridge: MediaBridge, src: int,
                     body: bytes) -> bytes | None:
        """Our offer for the other leg, or None after answering the caller with the error."""
        call = inv.call
        try:
            offer = await bridge.offer(src, body)
        except SdpError as exc:
            self._fail(inv, exc.status, f"sdp: {exc.reason}")
            return None
        except PortsExhausted:
            self.counters["rejected.ports"] += 1
            self._fail(inv, 503, "media ports exhausted", [("Retry-After", RETRY_AFTER)])
            return None
        except MediaError as exc:
            self._fail(inv, 500, f"media: {type(exc).__name__}")
            return None
        if bridge.session_id is not None:
            self._by_session[bridge.session_id] = call
            call.media_session = bridge.session_id  # ops reads the relay's counters for CDRs
        return offer

    async def _answered_late(self, inv: _Invite, bridge: MediaBridge, resp: SipResponse,
                             cseq: int) -> None:
        """Late offer: B's 2xx offers, we offer on to A in our 2xx, A answers in its ACK and
        that answer goes to B in our (delayed) ACK."""
        call = inv.call
        learn_response(call.b, resp)
        ua = self.config.gateway.user_agent
        if inv.closed or not call.active or not is_sdp(resp):
            self._ack(request(call.b, "ACK", cseq=cseq, user_agent=ua), call.b.trunk,
                      call.b.peer)
            if not inv.closed and call.active:
                self._fail(inv, 488, "callee sent no offer in its 2xx to an offerless INVITE")
            await self._bye(call.b)
            return
        self._late_acks.add(call.id)
        try:
            offer = await self._offer(inv, bridge, 1, resp.body)
            answer = None
            if offer is not None:
                waiter: asyncio.Future[SipRequest] = asyncio.get_running_loop().create_future()
                self._acks[call.id] = waiter
                self._confirm(inv, resp, offer)
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    ack = await asyncio.wait_for(waiter, 64 * self.config.sip.t1)
                    if is_sdp(ack):
                        answer = await bridge.answer(ack.body)
        except SdpError as exc:
            log.info("call.late_answer_refused", call=call.id, reason=exc.reason)
        finally:
            self._late_acks.discard(call.id)
            self._acks.pop(call.id, None)
        self._ack(request(call.b, "ACK", cseq=cseq, body=answer or b"", user_agent=ua),
                  call.b.trunk, call.b.peer)
        if answer is None and call.active:
            self._end(call, EndReason.ERROR)

    def _confirm(self, inv: _Invite, resp: SipResponse, body: bytes) -> None:
        """Relay B's 2xx to A: the call is answered, A's ACK confirms it."""
        call = inv.call
        now = self._clock()
        call.state = CallState.ANSWERED
        call.answered_at = now
        call.touch(now)
        extra = copy_headers(resp.headers, call.b.trunk, call.a.trunk, self.config.gateway.domain)
        self._answer_a(inv, 200, body=body, extra=extra)
        self._unacked[inv.tid] = call
        self._unacked_tid[call.id] = inv.tid
        self.counters["calls.answered"] += 1
        bridge = self._media.get(call.id)
        if bridge is not None and (sid := bridge.session_id) is not None:
            bridge.watch_idle(self.config.media.inactivity_timeout,
                              lambda stream: self.on_media_timeout(sid, stream))
        log.info("call.answered", call=call.id)

    def _fail(self, inv: _Invite, status: int, why: str,
              extra: Extra | None = None) -> None:
        log.info("call.failed", call=inv.call.id, status=status, why=why)
        self.counters[f"failed.{status}"] += 1
        self._answer_a(inv, status, extra=extra)
        self._end(inv.call, EndReason.REJECTED if status < 500 else EndReason.ERROR, bye=False)

    async def _provisional(self, inv: _Invite, bridge: MediaBridge, resp: SipResponse) -> None:
        call = inv.call
        learn_response(call.b, resp)
        body = b""
        if is_sdp(resp):
            try:
                body = await bridge.answer(resp.body, final=False)
            except SdpError as exc:
                log.info("call.early_sdp_refused", call=call.id, reason=exc.reason)
        if inv.closed:
            return
        call.state = CallState.EARLY
        call.touch(self._clock())
        extra = copy_headers(resp.headers, call.b.trunk, call.a.trunk, self.config.gateway.domain)
        self._reply(inv.tid, inv.request, resp.status, leg=call.a, body=body, extra=extra)

    async def _answered(self, inv: _Invite, bridge: MediaBridge, resp: SipResponse,
                        cseq: int) -> None:
        call = inv.call
        learn_response(call.b, resp)
        ack = request(call.b, "ACK", cseq=cseq, user_agent=self.config.gateway.user_agent)
        self._ack(ack, call.b.trunk, call.b.peer)
        if inv.closed or not call.active:
            # the 2xx crossed our CANCEL: the B dialog exists now and must be ended
            self.counters["cancel_raced_2xx"] += 1
            await self._bye(call.b)
            return
        body = b""
        if is_sdp(resp):
            try:
                body = await bridge.answer(resp.body, final=True)
            except SdpError as exc:
                self._fail(inv, exc.status, f"sdp answer: {exc.reason}")
                await self._bye(call.b)
                return
        elif bridge.offer_pending:
            self._fail(inv, 488, "2xx without an SDP answer")
            await self._bye(call.b)
            return
        self._confirm(inv, resp, body)

    # ------------------------------------------------------------------ in-dialog
    def _in_dialog(self, req: SipRequest, tid: Tid | None, trunk: Trunk, to_tag: str) -> None:
        found = self._dialogs.get((req.call_id, to_tag))
        if found is None or found[1].trunk.name != trunk.name:
            if tid is not None:
                self._reply(tid, req, 481)
            return
        call, leg = found
        call.touch(self._clock())
        if req.method == "ACK":
            if call.state == CallState.ANSWERED and leg is call.a:
                call.state = CallState.CONFIRMED
                self._forget_unacked(call)
            waiter = self._acks.get(call.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(req)
            return
        if tid is None:
            return
        cseq = req.cseq.number
        if leg.remote_cseq is not None and cseq < leg.remote_cseq:
            self._reply(tid, req, 500, leg=leg)
            return
        leg.remote_cseq = cseq
        method = req.method
        if method == "BYE":
            self._reply(tid, req, 200, leg=leg)
            self._end(call, EndReason.CALLER_BYE if leg is call.a else EndReason.CALLEE_BYE)
        elif method == "OPTIONS":
            self._reply(tid, req, 200, leg=leg, extra=[("Allow", ALLOW), ("Accept", ACCEPT)])
        elif method in ("INVITE", "UPDATE"):
            self._offer_in_dialog(req, tid, call, leg)
        elif method in ("PRACK", "CANCEL"):
            self._reply(tid, req, 481, leg=leg)
        elif (method not in RELAYED or method not in leg.trunk.methods
              or method not in call.other(leg).trunk.methods):
            # REFER and the like would need headers that never cross (Refer-To, Replaces)
            self._reply(tid, req, 405, leg=leg, extra=[("Allow", ALLOW)])
        elif call.state != CallState.CONFIRMED:
            self._reply(tid, req, 491 if method == "INVITE" else 403, leg=leg)
        else:
            self._spawn(self._relay_in_dialog(req, tid, call, leg))

    def _offer_in_dialog(self, req: SipRequest, tid: Tid, call: Call, leg: Leg) -> None:
        bridge = self._media.get(call.id)
        if bridge is None or call.state not in (CallState.CONFIRMED, CallState.ANSWERED):
            self._reply(tid, req, 491 if req.method == "INVITE" else 500, leg=leg)
            return
        if call.reinvite_pending or bridge.offer_pending:
            self.counters["glare"] += 1
            self._reply(tid, req, 491, leg=leg)
            return
        refresh_target(leg, req)
        call.reinvite_pending = True
        self._spawn(self._reoffer(req, tid, call, leg, bridge))

    async def _reoffer(self, req: SipRequest, tid: Tid, call: Call, leg: Leg,
                       bridge: MediaBridge) -> None:
        try:
            if is_sdp(req):
                await self._relay_offer(req, tid, call, leg, bridge)
            elif req.method == "UPDATE":
                self._reply(tid, req, 200, leg=leg)
            else:
                await self._offerless(req, tid, call, leg, bridge)
        finally:
            call.reinvite_pending = False

    async def _relay_offer(self, req: SipRequest, tid: Tid, call: Call, leg: Leg,
                           bridge: MediaBridge) -> None:
        src = 0 if leg is call.a else 1
        other = call.other(leg)
        try:
            offer = await bridge.offer(src, req.body)
        except SdpError as exc:
            self._reply(tid, req, exc.status, leg=leg)
            return
        out = request(other, req.method, body=offer,
                      extra=copy_headers(req.headers, leg.trunk, other.trunk,
                                         self.config.gateway.domain),
                      user_agent=self.config.gateway.user_agent)
        cseq = other.local_cseq
        try:
            resp = await self._final(self._client(out, other.trunk, other.peer))
        except SipError:
            await bridge.reject()
            self._reply(tid, req, 408, leg=leg)
            if call.active:
                self._end(call, EndReason.ERROR)
            return
        if req.method == "INVITE" and resp.status < 300:
            self._ack(request(other, "ACK", cseq=cseq,
                                 user_agent=self.config.gateway.user_agent),
                         other.trunk, other.peer)
        if not call.active:
            return
        if resp.status >= 300:
            await bridge.reject()
            self._reply(tid, req, relayed_status(resp.status), leg=leg)
            return
        refresh_target(other, resp)
        try:
            answer = await bridge.answer(resp.body) if is_sdp(resp) else b""
        except SdpError as exc:
            await bridge.reject()
            self._reply(tid, req, exc.status, leg=leg)
            return
        if not answer:
            await bridge.reject()
            self._reply(tid, req, 488, leg=leg)
            return
        call.touch(self._clock())
        self._reply(tid, req, 200, leg=leg, body=answer)

    async def _offerless(self, req: SipRequest, tid: Tid, call: Call, leg: Leg,
                         bridge: MediaBridge) -> None:
        """A re-INVITE without SDP: offer the current session ourselves, answer comes in ACK."""
        src = 0 if leg is call.a else 1
        try:
            offer = bridge.current_offer(src)
        except SdpError as exc:
            self._reply(tid, req, exc.status, leg=leg)
            return
        waiter: asyncio.Future[SipRequest] = asyncio.get_running_loop().create_future()
        self._acks[call.id] = waiter
        self._reply(tid, req, 200, leg=leg, body=offer)
        try:
            ack = await asyncio.wait_for(waiter, 64 * self.config.sip.t1)
        except (TimeoutError, asyncio.CancelledError):
            return
        finally:
            self._acks.pop(call.id, None)
        if is_sdp(ack):
            try:
                await bridge.local_answer(src, offer, ack.body)
            except SdpError as exc:
                log.info("call.ack_answer_refused", call=call.id, reason=exc.reason)
                self._end(call, EndReason.ERROR)

    async def _relay_in_dialog(self, req: SipRequest, tid: Tid, call: Call, leg: Leg) -> None:
        """INFO, MESSAGE, NOTIFY and other in-dialog requests go to the other leg as is."""
        other = call.other(leg)
        extra = copy_headers(req.headers, leg.trunk, other.trunk, self.config.gateway.domain)
        out = request(other, req.method, body=req.body, content_type=req.content_type,
                      extra=extra, user_agent=self.config.gateway.user_agent)
        body, ctype = b"", None
        try:
            resp = await self._final(self._client(out, other.trunk, other.peer))
            status = relayed_status(resp.status)
            if resp.body and resp.content_type and not is_sdp(resp):
                body, ctype = resp.body, resp.content_type   # SDP would bypass the relay
        except TransactionTimeout:
            status = 408
        except SipError:
            status = 503
        extra = [("Content-Type", ctype)] if ctype else []
        resp_out = response(leg, req, status, reason(status), extra=extra,
                            user_agent=self.config.gateway.user_agent)
        resp_out.body = body
        self.sip.respond(tid, resp_out)


