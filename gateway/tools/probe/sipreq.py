"""Requests the probe sends and the transactions it runs, on the gateway's own SIP messages.

A transaction here is deliberately simple: send, retransmit on UDP at T1 doubling (RFC 3261
§17.1.1.2) a bounded number of times, collect the responses of that Call-ID and CSeq until a
final one or the timeout. ACK and BYE always go back on the same flow, to the named target,
whatever Contact or Record-Route say.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.sip.errors import SipParseError
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.uri import parse_uri
from gateway.tools.probe.wire import Channel, ChannelError

T1 = 0.5
USER_AGENT = "srtpgw-probe"


def token(n: int = 8) -> str:
    return secrets.token_hex(n)


def _hostport(addr: tuple[str, int]) -> str:
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    return f"{host}:{addr[1]}"


def new_request(method: str, ruri: str, local: tuple[str, int], transport: str, *,
                from_user: str = "probe",
                to_uri: str | None = None, call_id: str | None = None, cseq: int = 1,
                extra: Sequence[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None, from_tag: str | None = None) -> SipRequest:
    """A well-formed out-of-dialog request from this flow's local address."""
    hostport = _hostport(local)
    transport = transport.upper()
    scheme = "sip"
    h = Headers()
    h.add("Via", f"SIP/2.0/{transport} {hostport};branch=z9hG4bK{token()};rport")
    h.add("Max-Forwards", "70")
    h.add("From", f"<{scheme}:{from_user}@{hostport}>;tag={from_tag or token(4)}")
    h.add("To", f"<{to_uri or ruri}>")
    h.add("Call-ID", call_id or f"{token(12)}@probe")
    h.add("CSeq", f"{cseq} {method}")
    contact_params = ";transport=tls" if transport == "TLS" else (
        ";transport=tcp" if transport == "TCP" else "")
    h.add("Contact", f"<{scheme}:{from_user}@{hostport}{contact_params}>")
    h.add("User-Agent", USER_AGENT)
    for name, value in extra:
        h.add(name, value)
    if body:
        h.add("Content-Type", content_type or "application/sdp")
    return SipRequest(method, parse_uri(ruri), h, body)


def on(channel: Channel, method: str, ruri: str, **kw: object) -> SipRequest:
    """``new_request`` from this flow's local address and transport."""
    return new_request(method, ruri, channel.local, channel.endpoint.transport,
                       **kw)  # type: ignore[arg-type]


@dataclass
class Exchange:
    """One request and what came back for it. ``elapsed`` is the time to the first answer;
    ``request`` is None when the flow could not even be opened (``error`` says why)."""

    request: SipRequest | None
    responses: list[SipResponse] = field(default_factory=list)
    requests_seen: list[SipRequest] = field(default_factory=list)
    elapsed: float | None = None
    error: str | None = None

    @property
    def final(self) -> SipResponse | None:
        finals = [r for r in self.responses if r.status >= 200]
        return finals[0] if finals else None

    @property
    def status(self) -> int | None:
        final = self.final
        return final.status if final else None

    @property
    def answered(self) -> bool:
        return bool(self.responses)

    def describe(self) -> str:
        if self.error:
            return self.error
        if self.final is not None:
            return f"{self.final.status} {self.final.reason}"
        if self.responses:
            r = self.responses[-1]
            return f"only {r.status} {r.reason}"
        return "no answer"


def _matches(resp: SipResponse, req: SipRequest) -> bool:
    try:
        return resp.call_id == req.call_id and resp.cseq == req.cseq
    except SipParseError:
        return False


def exchange(channel: Channel, request: SipRequest, timeout: float, *,
             retransmit: bool = True, data: bytes | None = None,
             stop_at_provisional: bool = False) -> Exchange:
    """Send ``request`` (or raw ``data`` standing for it) and collect its responses."""
    ex = Exchange(request)
    payload = data if data is not None else request.to_bytes()
    start = time.monotonic()
    deadline = start + timeout
    interval = T1
    next_send = start
    sends = 0
    udp = channel.endpoint.transport == "udp"
    try:
        while (now := time.monotonic()) < deadline:
            if now >= next_send and (sends == 0 or (udp and retransmit and not ex.responses
                                                   and sends < 5)):
                channel.send(payload)
                sends += 1
                next_send = now + interval
                interval = min(interval * 2, 4.0)
            wait = min(deadline, next_send if udp and retransmit and not ex.responses
                       else deadline) - time.monotonic()
            for raw in channel.receive(max(0.01, wait)):
                _collect(ex, raw, request, start)
            if ex.final is not None or (stop_at_provisional and ex.responses):
                break
            if channel.closed_by_peer:
                ex.error = ex.error or "connection closed by the target"
                break
    except ChannelError as exc:
        ex.error = str(exc)
    return ex


def _collect(ex: Exchange, raw: bytes, request: SipRequest, start: float) -> None:
    try:
        msg = parse_message(raw)
    except SipParseError:
        return
    if isinstance(msg, SipResponse):
        if _matches(msg, request):
            if ex.elapsed is None:
                ex.elapsed = time.monotonic() - start
            ex.responses.append(msg)
    else:
        ex.requests_seen.append(msg)


def ack_for(request: SipRequest, response: SipResponse) -> SipRequest:
    """ACK of an INVITE's final response: same branch for a failure (§17.1.1.3), a new one and
    the dialog's route for a 2xx (§13.2.2.4)."""
    h = Headers()
    via = request.headers.get("Via") or ""
    if response.status >= 300:
        uri = request.uri
        h.add("Via", via)
    else:
        contacts = response.contact
        uri = contacts[0].uri if contacts else request.uri
        h.add("Via", via.split(";branch=")[0] + f";branch=z9hG4bK{token()};rport")
        for rr in reversed(response.headers.values("Record-Route")):
            h.add("Route", rr)
    h.add("Max-Forwards", "70")
    h.add("From", request.headers.get("From") or "")
    h.add("To", response.headers.get("To") or "")
    h.add("Call-ID", request.call_id)
    h.add("CSeq", f"{request.cseq.number} ACK")
    return SipRequest("ACK", uri, h)


def bye_for(request: SipRequest, response: SipResponse) -> SipRequest:
    ack = ack_for(request, response)
    h = Headers()
    for name, value in ack.headers:
        if name == "Via":
            value = value.split(";branch=")[0] + f";branch=z9hG4bK{token()};rport"
        elif name == "CSeq":
            value = f"{request.cseq.number + 1} BYE"
        h.add(name, value)
    return SipRequest("BYE", ack.uri, h)


def cancel_for(request: SipRequest) -> SipRequest:
    h = Headers()
    for name in ("Via", "From", "To", "Call-ID"):
        h.add(name, request.headers.get(name) or "")
    h.add("Max-Forwards", "70")
    h.add("CSeq", f"{request.cseq.number} CANCEL")
    return SipRequest("CANCEL", request.uri, h)


def finish_invite(channel: Channel, invite: SipRequest, ex: Exchange, timeout: float = 2.0
                  ) -> None:
    """Leave nothing behind: ACK a final answer, BYE a 2xx, CANCEL a call still ringing."""
    try:
        if ex.final is None and ex.responses:
            exchange(channel, cancel_for(invite), timeout)
            for raw in channel.receive(timeout):
                _collect(ex, raw, invite, time.monotonic())
        final = ex.final
        if final is None:
            return
        channel.send(ack_for(invite, final).to_bytes())
        if 200 <= final.status < 300:
            exchange(channel, bye_for(invite, final), timeout)
    except ChannelError:
        return
