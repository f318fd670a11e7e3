"""The back-to-back user agent: every call is two independent dialogs and one media session.

Requests arrive from the SIP stack (after the firewall) through ``handle``; the B2BUA answers
on the same leg and, where the request means something to the other side, re-originates it
there from that leg's own dialog state. The flows live in their own modules — ``invite`` (new
calls, CANCEL, stray 2xx), ``indialog`` (requests within a call), ``options`` — over the shared
state and teardown of ``core``; this class dispatches to them and runs the call table's
lifecycle (reload, session-expiry sweep, drain and shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib

from gateway.b2bua.call import CallState, EndReason, expired
from gateway.b2bua.core import log
from gateway.b2bua.indialog import InDialogFlow
from gateway.b2bua.invite import InviteFlow
from gateway.b2bua.legs import caller_peer
from gateway.b2bua.media import DtlsContext, dtls_context
from gateway.b2bua.options import OptionsRelay
from gateway.b2bua.registrar import RegisterResult
from gateway.b2bua.status import out_of_dialog_status
from gateway.config import Config, Trunk
from gateway.media.api import MediaError
from gateway.policy.acl import Acl
from gateway.sip.capabilities import allow
from gateway.sip.errors import SipParseError
from gateway.sip.events import Tid
from gateway.sip.message import SipRequest
from gateway.sip.stack import IncomingRequest
from gateway.sip.transport import MessageSource


class B2bua(InviteFlow, InDialogFlow, OptionsRelay):
    """Calls between trunks. ``calls`` is the live table (ops reads it for status and drain)."""

    def reload(self, config: Config, dtls: DtlsContext | None = None) -> None:
        """New trunks and routes apply to new calls; live calls keep the trunks they began with.

        The DTLS certificate is read again (it may have been rotated) before anything changes,
        so a bad one fails the reload (DtlsIdentityError) and leaves the B2BUA as it was.
        ``dtls``: the context a caller already loaded from ``config`` (ops loads everything
        that can fail before it swaps anything)."""
        self.dtls = dtls if dtls is not None else dtls_context(config)
        self._acl = Acl(config)
        self.config = config
        self.registrar.section = config.registrar
        self.registrar.retain({t.name for t in config.trunks if t.registrar})

    def handle(self, incoming: IncomingRequest, trunk: Trunk | None = None) -> None:
        """A request from the stack; ``trunk`` is the firewall's verdict (else we classify)."""
        src = incoming.source
        if trunk is None:
            trunk = self.classify(src)
        req, tid = incoming.request, incoming.tid
        if trunk is None:
            if tid is not None and not incoming.cancels and \
                    self.config.firewall.unknown_source == "403":
                self._refuse(tid, req, 403)
            return
        if incoming.cancels:
            if tid is not None:
                self.handle_cancel(tid)
            return
        to_tag = req.to.tag
        if to_tag is not None:
            self._follow_flow(req, to_tag, trunk, src)
            self._in_dialog(req, tid, trunk, to_tag)
        elif req.method == "ACK" or tid is None:
            return
        elif req.method == "INVITE":
            self._new_invite(req, tid, trunk, caller_peer(trunk, src, req), src.connection_id)
        elif req.method == "OPTIONS":
            self._options(req, tid, trunk)
        elif req.method == "REGISTER" and trunk.registrar:
            self._on_register(req, tid, trunk, src)
        else:
            self._reply(tid, req, out_of_dialog_status(req.method),
                        extra=[("Allow", allow(trunk))])

    def _on_register(self, req: SipRequest, tid: Tid, trunk: Trunk, src: MessageSource) -> None:
        try:
            result = self.registrar.register(req, src, trunk, self._clock())
        except SipParseError:   # a Contact that does not parse
            result = RegisterResult(400)
        if result.watch_flow is not None and src.connection_id is not None:
            self.sip.watch_flow(src.connection_id, result.watch_flow)
        self.counters[f"register.{result.status}"] += 1
        log.info("registrar.register", trunk=trunk.name, status=result.status,
                 transport=src.transport, flow=src.connection_id,
                 bindings=len(self.registrar))
        self._reply(tid, req, result.status, extra=result.headers)

    def flow_closed(self, connection: int) -> None:
        """A connection closed (the peer, an error, or a flow's keep-alive timeout): bindings
        registered over it are gone (RFC 5626 §5.5: a failed flow is no way to reach a UA)."""
        gone = self.registrar.flow_closed(connection)
        if gone:
            log.info("registrar.flow_lost", flow=connection, bindings=len(gone),
                     trunks=",".join(sorted({b.trunk for b in gone})))

    def _follow_flow(self, req: SipRequest, to_tag: str, trunk: Trunk,
                     src: MessageSource) -> None:
        """A peer that reconnected (its old connection closed) is reached over the connection
        its dialog's requests now arrive on (RFC 5923 §6)."""
        found = self._dialogs.get((req.call_id, to_tag))
        if src.connection_id is None or found is None:
            return
        leg = found[1]
        if (leg.connection is not None and leg.trunk.name == trunk.name
                and leg.remote_tag == req.from_.tag):
            leg.connection = src.connection_id

    async def sweep(self, now: float | None = None) -> list[str]:
        """End calls with neither signalling nor media for ``sip.session_expires`` seconds.

        Media counts as activity: a long call whose phones never refresh the session must not
        be cut while it carries audio. Returns the ids of the calls ended.
        """
        now = self._clock() if now is None else now
        self.registrar.expire(now)
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
