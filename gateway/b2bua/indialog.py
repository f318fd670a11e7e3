"""Requests within a call's dialogs: ACK, BYE, re-INVITE/UPDATE offers and relayed requests.

A request on one leg is answered on that leg from its own dialog state and, where it means
something to the other side, re-originated there from the other leg's state: nothing of one
dialog's identifiers crosses. One offer/answer exchange runs per call at a time; a second,
from either side, is glare (491).
"""

from __future__ import annotations

import asyncio

from gateway.b2bua.call import Call, CallState, EndReason, Leg
from gateway.b2bua.core import CallCore, log
from gateway.b2bua.dialog import forwarded_hops, refresh_target, request, response
from gateway.b2bua.media import MediaBridge
from gateway.b2bua.status import ACCEPT, is_sdp, reason, relayed_status
from gateway.b2bua.topology import copy_headers
from gateway.config import Trunk
from gateway.sdp.errors import SdpError
from gateway.sip.capabilities import RELAYED, allow, capability_headers
from gateway.sip.errors import SipError, TransactionTimeout
from gateway.sip.events import Tid
from gateway.sip.message import SipRequest


class InDialogFlow(CallCore):
    """What a request carrying our To tag does to its call and the other leg."""

    def _in_dialog(self, req: SipRequest, tid: Tid | None, trunk: Trunk, to_tag: str) -> None:
        found = self.dialog_leg(req.call_id, to_tag, req.from_.tag)
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
            self._reply(tid, req, 200, leg=leg,
                        extra=[*capability_headers(leg.trunk, call.other(leg).trunk),
                               ("Accept", ACCEPT)])
        elif req.max_forwards == 0:  # the rest goes on to the other leg: no hops left
            self._reply(tid, req, 483, leg=leg)
        elif method in ("INVITE", "UPDATE"):
            self._offer_in_dialog(req, tid, call, leg)
        elif method in ("PRACK", "CANCEL"):
            self._reply(tid, req, 481, leg=leg)
        elif (method not in RELAYED or method not in leg.trunk.methods
              or method not in call.other(leg).trunk.methods):
            # REFER and the like would need headers that never cross (Refer-To, Replaces)
            self._reply(tid, req, 405, leg=leg,
                        extra=[("Allow", allow(leg.trunk, call.other(leg).trunk))])
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
            self._reply(tid, req, exc.status, leg=leg, extra=self._warning(exc, leg.trunk))
            return
        caps = capability_headers(other.trunk, leg.trunk) if req.method == "INVITE" else []
        out = request(other, req.method, body=offer,
                      extra=[*caps, *copy_headers(req.headers, leg.trunk, other.trunk,
                                                  self.config.gateway.domain)],
                      user_agent=self.config.gateway.user_agent,
                      max_forwards=forwarded_hops(req))
        cseq = other.local_cseq
        try:
            resp = await self._final(self._leg_client(out, other))
        except SipError:
            await bridge.reject()
            self._reply(tid, req, 408, leg=leg)
            if call.active:
                self._end(call, EndReason.ERROR)
            return
        if req.method == "INVITE" and resp.status < 300:
            self._leg_ack(request(other, "ACK", cseq=cseq,
                                  user_agent=self.config.gateway.user_agent), other)
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
            self._reply(tid, req, exc.status, leg=leg, extra=self._warning(exc, leg.trunk))
            return
        if not answer:
            await bridge.reject()
            self._reply(tid, req, 488, leg=leg)
            return
        call.touch(self._clock())
        caps = capability_headers(leg.trunk, other.trunk) if req.method == "INVITE" else []
        self._reply(tid, req, 200, leg=leg, body=answer, extra=caps)

    async def _offerless(self, req: SipRequest, tid: Tid, call: Call, leg: Leg,
                         bridge: MediaBridge) -> None:
        """A re-INVITE without SDP: offer the current session ourselves, answer comes in ACK."""
        src = 0 if leg is call.a else 1
        try:
            offer = bridge.current_offer(src)
        except SdpError as exc:
            self._reply(tid, req, exc.status, leg=leg, extra=self._warning(exc, leg.trunk))
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
                      extra=extra, user_agent=self.config.gateway.user_agent,
                      max_forwards=forwarded_hops(req))
        body, ctype = b"", None
        try:
            resp = await self._final(self._leg_client(out, other))
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
