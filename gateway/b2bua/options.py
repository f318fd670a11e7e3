"""OPTIONS outside a dialog: answered by us, or relayed to the routed trunk as a probe of it.

A trunk with ``answer_options`` (or one that routes nowhere) gets our own capabilities; else the
callee side's status comes back mapped, so a keep-alive through the gateway reflects the far end.
"""

from __future__ import annotations

from gateway.b2bua.core import CallCore
from gateway.b2bua.dialog import forwarded_hops, request
from gateway.b2bua.legs import callee_leg, callee_ruri, route_request
from gateway.b2bua.routing import Routed
from gateway.b2bua.status import ACCEPT, relayed_status
from gateway.b2bua.topology import copy_headers
from gateway.config import Trunk
from gateway.sip.capabilities import capability_headers
from gateway.sip.errors import SipError, TransactionTimeout
from gateway.sip.events import Tid
from gateway.sip.message import SipRequest


class OptionsRelay(CallCore):
    """Out-of-dialog OPTIONS."""

    def _options(self, req: SipRequest, tid: Tid, trunk: Trunk) -> None:
        routed = route_request(self.config, req, trunk)
        # Max-Forwards 0: the OPTIONS is for us, never forwarded (RFC 3261 §11)
        if trunk.answer_options or req.max_forwards == 0 or routed is None:
            caps = capability_headers(trunk, routed.trunk if routed else None)
            self._reply(tid, req, 200, extra=[*caps, ("Accept", ACCEPT)])
            return
        self._spawn(self._relay_options(req, tid, trunk, routed))

    async def _relay_options(self, req: SipRequest, tid: Tid, src: Trunk,
                             routed: Routed) -> None:
        dst = routed.trunk
        leg = callee_leg(req, dst, routed.user, self.config.gateway.domain,
                         self.sip.contact(dst.listener))
        out = request(leg, "OPTIONS", ruri=callee_ruri(dst, routed.user),
                      extra=copy_headers(req.headers, src, dst, self.config.gateway.domain),
                      user_agent=self.config.gateway.user_agent,
                      max_forwards=forwarded_hops(req))
        try:
            resp = await self._final(self._client(out, dst, dst.peer))
            status = relayed_status(resp.status)
        except TransactionTimeout:
            status = 408
        except SipError:
            status = 503
        self._reply(tid, req, status,
                    extra=capability_headers(src, dst) if status == 200 else None)
