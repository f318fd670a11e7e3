"""The dialog-creating INVITE: admission, leg B's INVITE, early media, the answer, CANCEL.

One task per INVITE waits on leg B while leg A's server transaction stays open; whatever comes
first — the callee's answer, a failure, the caller's CANCEL, a timeout — closes leg A's
transaction exactly once (``PendingInvite.closed``), and a 2xx that crosses a CANCEL, or comes
from a fork we did not pick, is ACKed and ended with BYE so no dialog is left behind on leg B.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

from gateway.b2bua.call import Call, CallState, EndReason, Leg, new_token
from gateway.b2bua.core import CallCore, PendingInvite, log
from gateway.b2bua.dialog import forwarded_hops, learn_response, request, without_tag
from gateway.b2bua.legs import callee_leg, callee_ruri, caller_leg, route_request, to_binding
from gateway.b2bua.media import MediaBridge
from gateway.b2bua.status import ACCEPT, RETRY_AFTER, Extra, is_sdp, relayed_status
from gateway.b2bua.topology import copy_headers, unsupported_required
from gateway.config import HostPort, Trunk
from gateway.media.api import MediaError, PortsExhausted
from gateway.sdp.errors import SdpError
from gateway.sip.capabilities import allow, capability_headers, supported
from gateway.sip.errors import SipError, TransactionTimeout
from gateway.sip.events import Tid
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.transport import MessageSource


class InviteFlow(CallCore):
    """New calls from a caller's INVITE to the callee's final answer, and what races it."""

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
            call, leg = found
            # the same ACK again (§13.2.2.4): for a late offer, that carries the same answer
            sent = self._late_answers.get(call.id)
            body = b""
            if sent is not None and leg is call.b and sent[0] == resp.cseq.number:
                body = sent[1]
            self._leg_ack(request(leg, "ACK", cseq=resp.cseq.number, body=body,
                                  user_agent=self.config.gateway.user_agent), leg)
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

    def _retry_after(self) -> str:
        """Seconds until a drain ends (this gateway then stops), else the usual 30."""
        if self.drain_until is None:
            return RETRY_AFTER
        return str(max(1, math.ceil(self.drain_until - self._clock())))

    def _new_invite(self, req: SipRequest, tid: Tid, trunk: Trunk, source: HostPort,
                    connection: int | None = None) -> None:
        if not self.accepting:
            self._refuse(tid, req, 503, extra=[("Retry-After", self._retry_after())])
            return
        if req.method not in trunk.methods:
            self._refuse(tid, req, 405, extra=[("Allow", allow(trunk))])
            return
        if req.max_forwards == 0:
            self._refuse(tid, req, 483)
            return
        unsupported = unsupported_required(req.headers, supported(trunk))
        if unsupported:
            self._refuse(tid, req, 420, extra=[("Unsupported", ", ".join(unsupported))])
            return
        if req.body and not is_sdp(req):
            self._refuse(tid, req, 415, extra=[("Accept", ACCEPT)])
            return
        routed = route_request(self.config, req, trunk)
        if routed is None:
            self._refuse(tid, req, trunk.no_route_status)
            return
        dst = routed.trunk
        for t in (trunk, dst):
            if self.active_calls(t.name) >= t.max_calls:
                self.counters["rejected.max_calls"] += 1
                self._refuse(tid, req, 503, extra=[("Retry-After", RETRY_AFTER)])
                return
        now = self._clock()
        a = caller_leg(req, trunk, source, self.sip.contact(trunk.listener), connection)
        b = callee_leg(req, dst, routed.user, self.config.gateway.domain,
                       self.sip.contact(dst.listener))
        if dst.registrar:
            binding = self.registrar.lookup(dst.name, routed.user, now)
            if binding is None:
                self.counters["rejected.not_registered"] += 1
                self._refuse(tid, req, 480)
                return
            to_binding(b, binding)
        call = Call(id=new_token(8), a=a, b=b, created=now, last_activity=now)
        inv = PendingInvite(call, req, tid)
        self._invites[tid] = inv
        self._register(call)
        self.counters["calls.started"] += 1
        log.info("call.start", call=call.id, a=trunk.name, b=dst.name)
        self._spawn(self._run_invite(inv, routed.user))

    async def _run_invite(self, inv: PendingInvite, user: str) -> None:
        call = inv.call
        try:
            await self._invite_b(inv, user)
        finally:
            self._invites.pop(inv.tid, None)
            if call.state in (CallState.INVITING, CallState.EARLY):
                self._end(call, EndReason.ERROR, bye=False)

    async def _invite_b(self, inv: PendingInvite, user: str) -> None:
        call, req = inv.call, inv.request
        src, dst = call.a.trunk, call.b.trunk
        try:
            bridge = MediaBridge(self.relay, src, dst, self.config.media.sdp_address,
                                 dtls=self.dtls,
                                 on_failed=lambda reason: self._media_failed(call, reason),
                                 media=(call.a.media, call.b.media))
        except SdpError as exc:
            self._fail(inv, exc.status, f"sdp: {exc.reason}", self._warning(exc, inv.call.a.trunk))
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
        out = request(call.b, "INVITE", ruri=call.b.remote_target or callee_ruri(dst, user),
                      body=body,
                      extra=[*capability_headers(dst, src),
                             *copy_headers(req.headers, src, dst, self.config.gateway.domain)],
                      user_agent=self.config.gateway.user_agent,
                      max_forwards=forwarded_hops(req))
        cseq = call.b.local_cseq
        try:
            client = self._leg_client(out, call.b)
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

    async def _offer(self, inv: PendingInvite, bridge: MediaBridge, src: int,
                     body: bytes) -> bytes | None:
        """Our offer for the other leg, or None after answering the caller with the error."""
        call = inv.call
        try:
            offer = await bridge.offer(src, body)
        except SdpError as exc:
            self._fail(inv, exc.status, f"sdp: {exc.reason}", self._warning(exc, inv.call.a.trunk))
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

    async def _answered_late(self, inv: PendingInvite, bridge: MediaBridge, resp: SipResponse,
                             cseq: int) -> None:
        """Late offer: B's 2xx offers, we offer on to A in our 2xx, A answers in its ACK and
        that answer goes to B in our (delayed) ACK."""
        call = inv.call
        learn_response(call.b, resp)
        ua = self.config.gateway.user_agent
        if inv.closed or not call.active or not is_sdp(resp):
            self._leg_ack(request(call.b, "ACK", cseq=cseq, user_agent=ua), call.b)
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
        self._leg_ack(request(call.b, "ACK", cseq=cseq, body=answer or b"", user_agent=ua),
                      call.b)
        if answer is None:
            if call.active:
                self._end(call, EndReason.ERROR)
        elif call.active:
            self._late_answers[call.id] = (cseq, answer)

    def _confirm(self, inv: PendingInvite, resp: SipResponse, body: bytes) -> None:
        """Relay B's 2xx to A: the call is answered, A's ACK confirms it."""
        call = inv.call
        now = self._clock()
        call.state = CallState.ANSWERED
        call.answered_at = now
        call.touch(now)
        extra = [*capability_headers(call.a.trunk, call.b.trunk),
                 *copy_headers(resp.headers, call.b.trunk, call.a.trunk,
                               self.config.gateway.domain)]
        self._answer_a(inv, 200, body=body, extra=extra)
        self._unacked[inv.tid] = call
        self._unacked_tid[call.id] = inv.tid
        self.counters["calls.answered"] += 1
        bridge = self._media.get(call.id)
        if bridge is not None and (sid := bridge.session_id) is not None:
            bridge.watch_idle(self.config.media.inactivity_timeout,
                              lambda stream: self.on_media_timeout(sid, stream))
        log.info("call.answered", call=call.id)

    def _fail(self, inv: PendingInvite, status: int, why: str,
              extra: Extra | None = None) -> None:
        log.info("call.failed", call=inv.call.id, status=status, why=why)
        self.counters[f"failed.{status}"] += 1
        self._answer_a(inv, status, extra=extra)
        self._end(inv.call, EndReason.REJECTED if status < 500 else EndReason.ERROR, bye=False)

    async def _provisional(self, inv: PendingInvite, bridge: MediaBridge,
                           resp: SipResponse) -> None:
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

    async def _answered(self, inv: PendingInvite, bridge: MediaBridge, resp: SipResponse,
                        cseq: int) -> None:
        call = inv.call
        learn_response(call.b, resp)
        ack = request(call.b, "ACK", cseq=cseq, user_agent=self.config.gateway.user_agent)
        self._leg_ack(ack, call.b)
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
                self._fail(inv, exc.status, f"sdp answer: {exc.reason}",
                           self._warning(exc, call.a.trunk))
                await self._bye(call.b)
                return
        elif bridge.offer_pending:
            self._fail(inv, 488, "2xx without an SDP answer")
            await self._bye(call.b)
            return
        self._confirm(inv, resp, body)
