"""The two legs of a new call, and where its callee-facing leg goes.

Leg A takes the caller's identifiers as they came; leg B gets fresh ones, and only the From/To
user parts cross from A, so nothing on B can be traced back to A's Call-ID, tags or hosts.
"""

from __future__ import annotations

from gateway.b2bua.call import Leg, new_token
from gateway.b2bua.dialog import uas_leg, without_tag
from gateway.b2bua.registrar import Binding
from gateway.b2bua.routing import Routed, select_route
from gateway.config import Config, HostPort, Trunk
from gateway.sip.message import SipRequest
from gateway.sip.transport import MessageSource
from gateway.sip.uri import SipUri


def route_request(config: Config, req: SipRequest, trunk: Trunk) -> Routed | None:
    """Where a new dialog from ``trunk`` goes, by its Request-URI's user and host."""
    uri = req.uri
    if not isinstance(uri, SipUri):
        return select_route(config, trunk, "", "")
    return select_route(config, trunk, uri.user or "", uri.host)


def callee_ruri(dst: Trunk, user: str) -> str:
    """The Request-URI on leg B: the destination trunk's peer, with its transport."""
    host = str(dst.peer)
    tail = ";transport=tls" if dst.transport == "tls" else (
        ";transport=tcp" if dst.transport == "tcp" else "")
    return f"sip:{user}@{host}{tail}" if user else f"sip:{host}{tail}"


def caller_peer(trunk: Trunk, src: MessageSource, req: SipRequest) -> HostPort:
    """Where in-dialog requests to the caller go when its connection is gone: its UDP source
    address, or on streams its Contact's port (else the trunk's), always at the address the
    request came from, so a Contact cannot point us at another host. While the connection is
    open it carries them (``Leg.connection``, RFC 5923)."""
    if src.transport == "udp":
        return HostPort(src.ip, src.port)
    contacts = req.contact
    uri = contacts[0].uri if contacts else None
    port = uri.port if isinstance(uri, SipUri) and uri.port else trunk.peer.port
    return HostPort(src.ip, port)


def to_binding(leg: Leg, binding: Binding) -> None:
    """Aim the callee-facing leg at a registered binding: over its flow, to its Contact,
    through its Path (RFC 3327, RFC 5626)."""
    leg.peer = binding.peer
    leg.connection = binding.connection
    leg.route_set = binding.path
    leg.remote_target = binding.contact


def caller_leg(req: SipRequest, trunk: Trunk, peer: HostPort, contact: str,
               connection: int | None = None) -> Leg:
    """The caller-facing leg: its dialog as the caller's INVITE set it up (we are its UAS)."""
    leg = Leg(trunk=trunk, call_id=req.call_id, local_tag=new_token(8),
              local_uri=without_tag(req.headers.get("To") or "", "To"),
              remote_uri=without_tag(req.headers.get("From") or "", "From"),
              peer=peer, contact=contact, connection=connection)
    uas_leg(leg, req)
    return leg


def callee_leg(req: SipRequest, dst: Trunk, user: str, domain: str, contact: str) -> Leg:
    """The callee-facing leg: fresh ids; only the From/To user parts come from leg A."""
    f = req.from_.uri
    from_user = f.user if isinstance(f, SipUri) and f.user else ""
    caller = f"<sip:{from_user}@{domain}>" if from_user else f"<sip:anonymous@{domain}>"
    callee = f"<sip:{user}@{dst.peer.host}>" if user else f"<sip:{dst.peer.host}>"
    return Leg(trunk=dst, call_id=new_token(16), local_tag=new_token(8), local_uri=caller,
               remote_uri=callee, peer=dst.peer, contact=contact)
