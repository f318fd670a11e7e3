"""The SIP stack the B2BUA uses: transports + parsing + transactions behind one asyncio facade.

Incoming requests reach ``on_request`` as ``IncomingRequest`` (parsed request, its source and a
way to answer through its server transaction). Outgoing requests run client transactions:
``await stack.request(req, target)`` or, for a stream of responses and CANCEL, ``stack.client()``.
The stack owns its Via: it adds one (with a fresh branch and ``rport``) to every request it sends,
stamps ``received``/``rport`` on requests it receives (RFC 3581), and routes responses back by
connection (streams) or by Via (UDP, §18.2.2).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Config
from gateway.ops.log import get_logger
from gateway.ops.sip_count import ResponseCounter
from gateway.sip.errors import SipParseError, TransactionTimeout, TransportFailure
from gateway.sip.events import (
    AckTimeout,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    Terminated,
    Tid,
    TimedOut,
    Transmit,
    TransportFailed,
)
from gateway.sip.headers import Via, split_list
from gateway.sip.message import (
    ParseLimits,
    SipRequest,
    SipResponse,
    error_response,
    parse_message,
)
from gateway.sip.transaction import (
    Timers,
    TransactionLayer,
    client_tid,
    new_branch,
    server_tid,
)
from gateway.sip.transport import MessageSource, SipTransports, Target

log = get_logger("sip")


@dataclass(frozen=True, slots=True)
class _UdpReply:
    listener: str
    addr: tuple[str, int]
    source: MessageSource


@dataclass(frozen=True, slots=True)
class _ConnReply:
    connection_id: int
    source: MessageSource
    fallback: Target  # §18.2.2: where to connect when that connection is gone


def _same_origin(a: _UdpReply | _ConnReply, b: _UdpReply | _ConnReply) -> bool:
    """One peer, as trunks tell peers apart: listener, transport, address and TLS identity;
    on UDP the source port too (a UA sends a CANCEL from where it sent the INVITE), while a
    stream peer may reconnect from a new port."""
    x, y = a.source, b.source
    return (x.listener == y.listener and x.transport == y.transport and x.ip == y.ip
            and x.tls_identities == y.tls_identities and x.tls_fingerprint == y.tls_fingerprint
            and (x.transport != "udp" or x.port == y.port))


@dataclass(frozen=True, slots=True)
class _ClientDest:
    target: Target
    tid: Tid


@dataclass(slots=True)
class IncomingRequest:
    """A request for the handler.

    ``tid`` is its server transaction (None for an ACK). For a CANCEL, ``cancels`` is True and
    ``tid`` is the cancelled INVITE's transaction: the stack has already answered the CANCEL 200;
    the handler answers the INVITE 487.
    """

    request: SipRequest
    source: MessageSource
    tid: Tid | None
    stack: SipStack = field(repr=False)
    cancels: bool = False

    def respond(self, response: SipResponse) -> bool:
        if self.tid is None or self.cancels:
            return False
        return self.stack.respond(self.tid, response)

    def reject(self, response: SipResponse) -> bool:
        """Refuse this request with one stateless answer (see ``SipStack.respond_stateless``)."""
        if self.tid is None or self.cancels:
            return False
        return self.stack.respond_stateless(self.tid, response)

    def drop(self) -> bool:
        """Never answer this request (e.g. a firewall drop): free its transaction now."""
        if self.tid is None or self.cancels:
            return False
        return self.stack.drop(self.tid)


class ClientTransaction:
    """Responses of one request we sent, in order; the last one is final."""

    def __init__(self, stack: SipStack, tid: Tid, request: SipRequest) -> None:
        self._stack = stack
        self.tid = tid
        self.request = request
        self.sent_to: tuple[Target, tuple[str, int]] | None = None  # a located UDP target
        self._queue: asyncio.Queue[SipResponse | Exception] = asyncio.Queue()
        self.done = False  # a final response (or an error) has been queued

    def _push(self, item: SipResponse | Exception) -> None:
        self.done = isinstance(item, Exception) or item.status >= 200
        self._queue.put_nowait(item)

    async def response(self) -> SipResponse:
        """The next response; raises TransactionTimeout or TransportFailure when none comes."""
        item = await self._queue.get()
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> bool:
        """CANCEL the INVITE (now, or as soon as a provisional response arrives)."""
        return self._stack.cancel(self.tid)


OnRequest = Callable[[IncomingRequest], None]


class SipStack:
    """One SIP element: every listener of the config, one transaction layer."""

    def __init__(self, config: Config, on_request: OnRequest, *,
                 admit: Callable[[MessageSource], bool] | None = None,
                 on_invalid: Callable[[MessageSource, SipParseError], None] | None = None,
                 on_stray_response: Callable[[SipResponse, MessageSource], None] | None = None,
                 on_ack_timeout: Callable[[Tid], None] | None = None,
                 on_tls_failure: Callable[[MessageSource, str], None] | None = None) -> None:
        self.config = config
        self._on_request = on_request
        self._admit = admit
        self._on_invalid = on_invalid
        self._on_stray = on_stray_response
        self._on_ack_timeout = on_ack_timeout
        self._limits = ParseLimits.from_config(config.sip)
        self.layer = TransactionLayer(Timers.from_config(config.sip), same_origin=_same_origin)
        self.transports = SipTransports(config, self._received, admit=admit,
                                        on_frame_error=self._frame_error,
                                        on_tls_failure=on_tls_failure,
                                        on_closed=self._connection_closed)
        self._tid_conn: dict[Tid, int] = {}  # client transactions -> the connection they use
        self.closed_hooks: list[Callable[[int], None]] = []  # told of every closed connection
        self._clients: dict[Tid, ClientTransaction] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = {"received": 0, "dropped": 0, "invalid": 0, "sent": 0}
        self.responses = ResponseCounter()  # by direction, method, status class, transport

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.transports.start()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.stop()
        for client in self._clients.values():
            client._push(TransportFailure("stack stopped"))
        self._clients.clear()

    def reload_tls(self, config: Config | None = None) -> None:
        """Load certificates and keys again for new connections (established ones stay), and
        take the new SIP limits and timers. Raises, changing nothing, when a file is unusable."""
        self.transports.reload_tls(config)
        if config is not None:
            self.config = config
            self._limits = ParseLimits.from_config(config.sip)
            self.layer.timers = Timers.from_config(config.sip)

    def bound(self, listener: str) -> tuple[str, int]:
        return self.transports.bound(listener)

    def watch_flow(self, cid: int, idle: float) -> None:
        """A registered flow (RFC 5626): closed when silent, keep-alives included, for ``idle``
        seconds; ``closed_hooks`` hear of it."""
        self.transports.watch_flow(cid, idle)

    def contact(self, listener: str, toward: str | None = None) -> str:
        """Our Contact URI on a listener (``toward``: the peer's IP, for wildcard binds)."""
        li = self.config.listener(listener)
        host, port = self.transports.advertised(listener, toward)
        host = f"[{host}]" if ":" in host else host
        return f"sip:{host}:{port};transport={li.transport}"

    @property
    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # ------------------------------------------------------------------ receiving
    def _received(self, data: bytes, source: MessageSource) -> None:
        try:
            self._process(data, source)
        except Exception:  # a bug must cost one message, not the listener or the connection
            log.error("sip.internal_error", peer=f"{source.ip}:{source.port}",
                      transport=source.transport, exc_info=True)

    def _process(self, data: bytes, source: MessageSource) -> None:
        if self._admit is not None and not self._admit(source):
            self.counters["dropped"] += 1
            return
        stream = source.transport != "udp"
        try:
            msg = parse_message(data, self._limits, stream=stream)
        except SipParseError as exc:
            self._invalid(data, source, exc)
            return
        self.counters["received"] += 1
        if isinstance(msg, SipRequest):
            reply: Any = self._stamp_via(msg, source)
        else:
            if len(msg.via) != 1:  # §8.1.3.3: a UA discards responses with more Vias
                self.counters["dropped"] += 1
                return
            self.responses.count("received", msg, source.transport)
            reply = source
        self.layer.receive(msg, reply, stream, self._now)
        self._pump()

    def _stamp_via(self, req: SipRequest, source: MessageSource) -> _UdpReply | _ConnReply:
        """RFC 3261 §18.2.1 / RFC 3581: note where the request really came from."""
        via = req.via[0]
        changed = False
        if via.host.strip("[]") != source.ip or via.rport_requested:  # RFC 3581 §4: both
            via.params["received"] = source.ip
            changed = True
        if via.rport_requested:
            via.params["rport"] = str(source.port)
            changed = True
        if changed:
            first = split_list(req.headers.get("Via") or "")
            req.headers.replace_first("Via", ", ".join([str(via), *first[1:]]))
        if source.connection_id is not None:
            default = 5061 if source.transport == "tls" else 5060
            self.transports.note_sent_by(source.connection_id, via.port or default)
            fallback = Target(source.transport, (via.received or via.host).strip("[]"),  # type: ignore[arg-type]
                              via.port or default, source.listener,
                              tls_identity=source.tls_identities)
            return _ConnReply(source.connection_id, source, fallback)
        port = source.port if via.rport_requested else (via.port or 5060)
        return _UdpReply(source.listener, (source.ip, port), source)

    def _invalid(self, data: bytes, source: MessageSource, exc: SipParseError) -> None:
        self.counters["invalid"] += 1
        log.info_limited("sip.invalid_message", peer=f"{source.ip}:{source.port}",
                         transport=source.transport, status=exc.status, reason=exc.reason)
        if self._on_invalid is not None:
            self._on_invalid(source, exc)
        self._answer_invalid(data, source, exc)

    def _frame_error(self, head: bytes, source: MessageSource, exc: SipParseError) -> None:
        self.counters["invalid"] += 1
        if self._on_invalid is not None:
            self._on_invalid(source, exc)
        self._answer_invalid(head, source, exc)

    def _answer_invalid(self, data: bytes, source: MessageSource, exc: SipParseError) -> None:
        """The stateless answer to a message that failed to parse: only its top Via was
        validated, so only that decides where the answer goes; counted once it is sent."""
        found = error_response(data, exc.status, secrets.token_hex(6))
        if found is None:
            return
        reply, via = found
        if source.connection_id is not None:
            if not self.transports.send_on_connection(source.connection_id, reply.to_bytes()):
                return
        else:
            port = source.port if via.rport_requested else (via.port or 5060)
            try:
                self.transports.send_datagram(source.listener, reply.to_bytes(),
                                              (source.ip, port))
            except TransportFailure:
                return
        self.responses.sent(reply)

    # ------------------------------------------------------------------ sending
    def respond(self, tid: Tid, response: SipResponse) -> bool:
        """Answer a server transaction (False when it no longer takes responses)."""
        ok = self.layer.send_response(tid, response, self._now)
        if ok:
            self.responses.sent(response)
        self._pump()
        return ok

    def respond_stateless(self, tid: Tid, response: SipResponse) -> bool:
        """Refuse a request (300-699) once, outside any transaction (RFC 3261 §8.2.7): for
        answers given before any work for the request, to sources that may be spoofed (an
        INVITE's final answer would otherwise be retransmitted until an ACK that never comes).
        The To tag should be ``stateless_tag(request)``, the same for a retransmission."""
        ok = self.layer.answer_stateless(tid, response)
        if ok:
            self.responses.sent(response)
        self._pump()
        return ok

    def stateless_tag(self, request: SipRequest) -> str:
        """A To tag that a retransmission of ``request`` gets again (§8.2.7), unguessable."""
        return self.layer.stateless_tag(server_tid(request))

    def drop(self, tid: Tid) -> bool:
        """End a server transaction without a response (unanswered ones expire anyway)."""
        ok = self.layer.forget(tid)
        self._pump()
        return ok

    def client(self, request: SipRequest, target: Target) -> ClientTransaction:
        """Send ``request`` to ``target`` in a new client transaction."""
        self._add_via(request, target)
        tid = client_tid(request.branch, request.method)
        handle = ClientTransaction(self, tid, request)
        self._clients[tid] = handle
        self.layer.send_request(request, _ClientDest(target, tid), target.transport != "udp",
                                self._now)
        self._pump()
        return handle

    async def request(self, request: SipRequest, target: Target,
                      on_provisional: Callable[[SipResponse], None] | None = None
                      ) -> SipResponse:
        """Run a client transaction to its final response.

        Raises TransactionTimeout (timer B/F) or TransportFailure."""
        handle = self.client(request, target)
        while True:
            response = await handle.response()
            if response.status >= 200:
                return response
            if on_provisional is not None:
                on_provisional(response)

    def cancel(self, tid: Tid) -> bool:
        ok = self.layer.cancel(tid, self._now)
        self._pump()
        return ok

    def send_ack(self, ack: SipRequest, target: Target) -> None:
        """ACK a 2xx: outside any transaction, with a Via of its own (§13.2.2.4)."""
        self._add_via(ack, target)
        self._send_stateless(ack.to_bytes(), target)

    def _add_via(self, request: SipRequest, target: Target) -> None:
        li = self.transports.listener_for(target.transport, target.listener)
        if li is not None:
            toward = self.transports.located(target)
            host, port = self.transports.advertised(li.name, toward[0] if toward else None)
        else:
            host, port = self.config.gateway.domain, 5061 if target.transport == "tls" else 5060
        host = f"[{host}]" if ":" in host else host
        via = Via(target.transport.upper(), host, port, {"branch": new_branch(), "rport": None})
        request.headers.add("Via", str(via), first=True)
        if request.headers.get("Max-Forwards") is None:
            request.headers.add("Max-Forwards", "70")

    def _send_stateless(self, data: bytes, target: Target) -> None:
        if target.transport == "udp":
            addr = self.transports.located(target)
            if addr is not None:
                self.transports.send_datagram(target.listener, data, addr)
            else:
                self._spawn_send(data, target, None)
            return
        conn = self.transports.reusable(target)
        if conn is not None and conn.write(data):
            return
        self._spawn_send(data, target, None)

    # ------------------------------------------------------------------ the core's outputs
    def _pump(self) -> None:
        layer = self.layer
        for t in layer.messages_to_send():
            self._transmit(t)
        while (ev := layer.next_event()) is not None:
            self._dispatch(ev)
        for t in layer.messages_to_send():
            self._transmit(t)
        for response in layer.own_responses():
            self.responses.sent(response)
        self._arm_timer()

    def _transmit(self, t: Transmit) -> None:
        self.counters["sent"] += 1
        dest = t.dest
        if isinstance(dest, _ConnReply):
            if not self.transports.send_on_connection(dest.connection_id, t.data):
                self._send_stateless(t.data, dest.fallback)
        elif isinstance(dest, _UdpReply):
            try:
                self.transports.send_datagram(dest.listener, t.data, dest.addr)
            except TransportFailure as exc:
                log.info("sip.send_failed", peer=f"{dest.addr[0]}:{dest.addr[1]}",
                         transport="udp", reason=str(exc))
        else:
            target = dest.target
            if target.transport == "udp":
                addr = self.transports.located(target)
                if addr is None:
                    self._spawn_send(t.data, target, dest.tid)
                    return
                if addr[0] != target.host and (client := self._clients.get(dest.tid)):
                    client.sent_to = (target, addr)
                try:
                    self.transports.send_datagram(target.listener, t.data, addr)
                except TransportFailure:
                    self._failed(dest.tid)
                return
            conn = self.transports.reusable(target)
            if conn is not None and conn.write(t.data):
                self._tid_conn[dest.tid] = conn.id
                return
            self._spawn_send(t.data, target, dest.tid)

    def _spawn_send(self, data: bytes, target: Target, tid: Tid | None) -> None:
        async def send() -> None:
            try:
                conn = await self.transports.send_to(target, data)
                if tid is not None and conn is not None and self.layer.state(tid) is not None:
                    self._tid_conn[tid] = conn.id
            except TransportFailure as exc:
                log.info("sip.send_failed", peer=f"{target.host}:{target.port}",
                         transport=target.transport, reason=str(exc))
                if tid is not None:
                    self._failed(tid, exc)
            except Exception:  # a bug must fail this request, not leave it waiting for timer B
                log.error("sip.internal_error", peer=f"{target.host}:{target.port}",
                          exc_info=True)
                if tid is not None:
                    self._failed(tid, TransportFailure("internal error while sending"))

        self.transports._spawn(send())

    def _connection_closed(self, cid: int) -> None:
        """Requests still waiting on a closed connection fail now, not at timer B/F (an INVITE
        past its provisional has no timer at all)."""
        for hook in self.closed_hooks:
            hook(cid)
        lost = [tid for tid, c in self._tid_conn.items() if c == cid]
        for tid in lost:
            del self._tid_conn[tid]
            if self.layer.state(tid) in ("calling", "trying", "proceeding"):
                self._failed(tid, TransportFailure("connection closed before the final response"))

    def _failed(self, tid: Tid, exc: TransportFailure | None = None) -> None:
        client = self._clients.get(tid)
        if client is not None and exc is not None:
            client._push(exc)
            self._clients.pop(tid, None)
        self.layer.transport_error(tid, self._now)
        self._pump()

    def _dispatch(self, ev: object) -> None:
        if isinstance(ev, RequestReceived):
            self._handle(IncomingRequest(ev.request, ev.source.source, ev.tid, self))
        elif isinstance(ev, CancelReceived):
            self._handle(IncomingRequest(ev.request, ev.source.source, ev.tid, self,
                                         cancels=True))
        elif isinstance(ev, ResponseReceived):
            client = self._clients.get(ev.tid) if ev.tid is not None else None
            if client is not None and not client.done:
                client._push(ev.response)
            elif self._on_stray is not None and ev.response.cseq.method != "CANCEL":
                # e.g. a retransmitted 2xx: the UAC re-ACKs it (CANCEL answers are ours)
                self._on_stray(ev.response, ev.source)
        elif isinstance(ev, TimedOut):
            client = self._clients.pop(ev.tid, None)
            if client is not None and client.sent_to is not None:
                self.transports.demote(*client.sent_to)  # RFC 3263 §4.3: the next one next
            if client is not None:
                client._push(TransactionTimeout(f"no final response to {client.request.method}"))
        elif isinstance(ev, TransportFailed):
            client = self._clients.pop(ev.tid, None)
            if client is not None:
                client._push(TransportFailure(f"could not send {client.request.method}"))
        elif isinstance(ev, AckTimeout):
            if self._on_ack_timeout is not None:
                self._on_ack_timeout(ev.tid)
        elif isinstance(ev, Terminated):
            self._clients.pop(ev.tid, None)
            self._tid_conn.pop(ev.tid, None)

    def _handle(self, incoming: IncomingRequest) -> None:
        try:
            self._on_request(incoming)
        except Exception as exc:  # the handler's bug must not take the stack down
            log.error("sip.handler_failed", method=incoming.request.method,
                      error=f"{type(exc).__name__}: {exc}")
            if incoming.tid is not None and not incoming.cancels:
                self.respond(incoming.tid, incoming.request.create_response(
                    500, to_tag=secrets.token_hex(6)))

    def _arm_timer(self) -> None:
        when = self.layer.get_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None and self._loop is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self._now)
        self._pump()
