"""What the gateway answers with: its capabilities, status mapping and reason phrases.

A status or reason phrase from one leg never crosses to the other as is: a 3xx would leak the
callee's targets, a 401/407 challenge belongs to the other side's realm and a reason phrase may
carry anything (topology hiding).
"""

from __future__ import annotations

import re

from gateway.b2bua.call import EndReason, Leg, new_token
from gateway.b2bua.dialog import SDP, response
from gateway.sdp.errors import SdpError
from gateway.sip.message import REASONS, SipRequest, SipResponse

ACCEPT = "application/sdp"
RETRY_AFTER = "30"

Extra = list[tuple[str, str]]


# Anything address-like in a reason is dropped from the Warning text: it may come from the
# other side's SDP (topology hiding). IPv4, IPv6 (two or more colons) and host:port shapes.
_ADDRESS = re.compile(r"\[?[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]?(:\d+)?"
                      r"|\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b|\b[\w.-]+\.[A-Za-z]{2,}(:\d+)?\b")
_WARN_TEXT = re.compile(r'[^A-Za-z0-9 ,;:()=/+_.-]')
_AGENT = re.compile(r"[^A-Za-z0-9.!%*_+`'~-]")   # warn-agent as a pseudonym token


def sdp_warning(exc: SdpError, agent: str) -> Extra:
    """``Warning: <code> <agent> "<reason>"`` (RFC 3261 §20.43) for an SDP refusal, so the
    phone learns why; the text carries no address and nothing that needs quoting."""
    if exc.warning is None:
        return []
    text = _WARN_TEXT.sub("", _ADDRESS.sub("-", exc.reason))[:120].strip()
    return [("Warning", f'{exc.warning} {_AGENT.sub("-", agent) or "-"} "{text}"')]


def is_sdp(msg: SipRequest | SipResponse) -> bool:
    ctype = (msg.content_type or "").split(";", 1)[0].strip().lower()
    return bool(msg.body) and ctype == SDP


def reason(status: int) -> str:
    """Our own reason phrase: the other side's may carry anything (topology hiding)."""
    return REASONS.get(status, "Unknown")


def relayed_status(status: int) -> int:
    """Final statuses that make no sense across the gateway are mapped (3xx would leak targets,
    401/407 challenges belong to the other side's realm)."""
    if 300 <= status < 400:
        return 480
    if status in (401, 407):
        return 403
    return status


def out_of_dialog_status(method: str) -> int:
    """A request with no To tag that we neither start a call for nor answer ourselves."""
    if method in ("REGISTER", "SUBSCRIBE", "PUBLISH"):
        return 405
    return 481 if method in ("BYE", "PRACK", "UPDATE", "INFO") else 501


def teardown_status(end: EndReason) -> int:
    """The final answer to a caller's INVITE still open when its call ends."""
    return {EndReason.CANCELLED: 487, EndReason.CALLER_BYE: 487,
            EndReason.SHUTDOWN: 503}.get(end, 500)


def reply(req: SipRequest, status: int, user_agent: str | None, *, leg: Leg | None = None,
          body: bytes = b"", extra: Extra | None = None, to_tag: str | None = None
          ) -> SipResponse:
    """Our answer to ``req``: on a leg from its dialog state, else with ``to_tag`` or a
    throwaway tag."""
    if leg is not None:
        return response(leg, req, status, reason(status), body=body, extra=extra or [],
                        user_agent=user_agent)
    resp = req.create_response(status, reason(status), to_tag=to_tag or new_token(8))
    for name, value in (extra or []):
        resp.headers.add(name, value)
    if user_agent:
        resp.headers.add("Server", user_agent)
    return resp
