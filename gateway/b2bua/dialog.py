"""Building a leg's SIP messages from its dialog state (RFC 3261 §12), and learning from replies.

Every routing header here is made from our own leg state, so a message on one leg carries no
identifier of the other: the Call-ID, tags, CSeq, Contact and Route set all belong to this leg.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.b2bua.call import Leg
from gateway.b2bua.topology import Header, agent_header
from gateway.sip.headers import Headers, NameAddr, parse_name_addr
from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.uri import parse_uri

# Requests and responses that establish or refresh a remote target carry our Contact.
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
SDP = "application/sdp"
MAX_FORWARDS = 70  # RFC 3261 §8.1.1.6, for requests we originate


def without_tag(value: str, what: str) -> str:
    """A From/To value re-serialized without its tag (the tag is leg state, kept apart)."""
    na = parse_name_addr(value, what)
    params = {k: v for k, v in na.params.items() if k != "tag"}
    return str(NameAddr(na.uri, na.display, params))


def uas_leg(leg: Leg, request: SipRequest) -> None:
    """Fill the caller-facing leg from the dialog-creating request (§12.1.1)."""
    leg.remote_tag = request.from_.tag
    contacts = request.contact
    leg.remote_target = str(contacts[0].uri) if contacts else None
    leg.route_set = tuple(str(r) for r in request.record_route)
    leg.remote_cseq = request.cseq.number


def learn_response(leg: Leg, response: SipResponse) -> None:
    """Remote tag, target and route set from a 18x/2xx on the callee-facing leg (§12.1.2)."""
    tag = response.to.tag
    if tag is not None:
        leg.remote_tag = tag
    contacts = response.contact
    if contacts:
        leg.remote_target = str(contacts[0].uri)
    if response.record_route:
        leg.route_set = tuple(str(r) for r in reversed(response.record_route))


def refresh_target(leg: Leg, message: SipRequest | SipResponse) -> None:
    """A target-refresh request or its 2xx may move the peer's Contact (§12.2)."""
    contacts = message.contact
    if contacts:
        leg.remote_target = str(contacts[0].uri)


def forwarded_hops(received: SipRequest) -> int:
    """Max-Forwards for the request we send because ``received`` came in: its value minus
    one (RFC 7332 §3), so a loop through B2BUAs still ends; 70 stands for a missing one."""
    hops = received.max_forwards
    return (MAX_FORWARDS if hops is None else hops) - 1


def request(leg: Leg, method: str, *, ruri: str | None = None, cseq: int | None = None,
            body: bytes = b"", content_type: str | None = None,
            extra: Iterable[Header] = (), user_agent: str | None = None,
            max_forwards: int = MAX_FORWARDS) -> SipRequest:
    """A request on this leg: initial (no remote tag yet) or within the dialog.

    ``max_forwards``: ``forwarded_hops`` of the request that caused this one, else ours."""
    target = ruri or leg.remote_target
    if target is None:
        raise ValueError("no Request-URI for this leg")
    h = Headers()
    for route in leg.route_set:
        h.add("Route", route)
    h.add("Max-Forwards", str(max_forwards))
    h.add("From", f"{leg.local_uri};tag={leg.local_tag}")
    h.add("To", leg.remote_uri + (f";tag={leg.remote_tag}" if leg.remote_tag else ""))
    h.add("Call-ID", leg.call_id)
    h.add("CSeq", f"{leg.next_cseq() if cseq is None else cseq} {method}")
    if method in TARGET_REFRESH:
        h.add("Contact", f"<{leg.contact}>")
    for name, value in (*extra, *agent_header(user_agent, request=True)):
        h.add(name, value)
    if body:
        h.add("Content-Type", content_type or SDP)
    return SipRequest(method, parse_uri(target), h, body)


def response(leg: Leg, req: SipRequest, status: int, reason: str | None = None, *,
             body: bytes = b"", content_type: str | None = None,
             extra: Iterable[Header] = (), user_agent: str | None = None) -> SipResponse:
    """Our response on this leg to ``req``, with our tag, Contact and agent header."""
    resp = req.create_response(status, reason, to_tag=leg.local_tag)
    if req.method in TARGET_REFRESH and 100 < status < 300:
        resp.headers.add("Contact", f"<{leg.contact}>")
    for name, value in (*extra, *agent_header(user_agent, request=False)):
        resp.headers.add(name, value)
    if body:
        resp.headers.add("Content-Type", content_type or SDP)
        resp.body = body
    return resp
