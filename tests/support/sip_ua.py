"""``SipTestUA``: a scriptable SIP user agent for tests, over UDP, TCP or TLS.

It is both UAC (``invite``, then ``Dialog.ack/cancel/bye/reinvite/request``; ``options``) and UAS
(incoming INVITEs answered per ``ua.uas``: provisional and final statuses, an SDP answer function,
or a rejection). Every message it receives and sends is recorded (``ua.received``/``ua.sent``) so
tests can assert on flows and header contents, e.g. that no internal address leaked.

It is deliberately independent of gateway.sip: its own small parser (``sipmsg``), simple
transactions (UDP retransmission with T1 doubling, 2xx retransmission until ACK, retransmitted
requests answered from a cache), and one connection per peer on TCP/TLS, reused both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.support.sipmsg import (
    SipMessage,
    SipParseError,
    StreamFramer,
    new_branch,
    new_tag,
    parse_message,
    uri_of,
)

Address = tuple[str, int]
T1 = 0.5
T2 = 4.0
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK",
           400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
           480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
           486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
           500: "Server Internal Error", 503: "Service Unavailable", 603: "Decline"}

AnswerFn = Callable[[SipMessage], "str | bytes | None"]


@dataclass
class UasBehaviour:
    """How the UA answers incoming requests. Change fields at any time during a test.

    ``invite_statuses``: sent in order for a new INVITE (the last one is final), ``delay``
    seconds apart. ``answer(invite)`` gives the SDP for 183/2xx (None = no body).
    ``reinvite_status``/``reinvite_answer`` do the same for re-INVITEs and UPDATEs with SDP.
    ``status_for`` overrides the status of any other method (e.g. {"BYE": 500}).
    """

    invite_statuses: Sequence[int] = (180, 200)
    delay: float = 0.0
    answer: AnswerFn | None = None
    reinvite_status: int = 200
    reinvite_answer: AnswerFn | None = None
    status_for: dict[str, int] = field(default_factory=dict)
    extra_headers: Sequence[tuple[str, str]] = ()
    ack_timeout: float = 32 * T1


class _ClientTx:
    """One request we sent, waiting for its responses."""

    def __init__(self, request: SipMessage, dialog: Dialog | None, peer: Address) -> None:
        self.request = request
        self.dialog = dialog
        self.peer = peer
        self.responses: list[SipMessage] = []
        self.final: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self.any_response = asyncio.Event()
        self.retransmit: asyncio.Task[None] | None = None


class Dialog:
    """One call leg as seen by this UA (UAC side if it sent the INVITE, else UAS side)."""

    def __init__(self, ua: SipTestUA, call_id: str, local_tag: str, local_uri: str,
                 remote_uri: str, peer: Address, is_uac: bool) -> None:
        self.ua = ua
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag: str | None = None
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_uri
        self.route_set: list[str] = []
        self.peer = peer
        self.is_uac = is_uac
        self.local_cseq = secrets.randbelow(1000) + 1
        self.invite: SipMessage | None = None
        self.invite_tx: _ClientTx | None = None
        self.requests: list[SipMessage] = []   # requests the peer sent in this dialog
        self.responses: list[SipMessage] = []  # responses to our requests in this dialog
        self.state = "init"
        self.local_sdp: str | None = None
        self.remote_sdp: str | None = None
        self._changed = asyncio.Event()
        self._acked = asyncio.Event()
        self._ack_cseq = 0

    def __repr__(self) -> str:
        return f"Dialog(call_id={self.call_id!r}, state={self.state}, uac={self.is_uac})"

    # ------------------------------------------------------------------ UAC side

    async def wait_final(self, timeout: float = 10.0) -> SipMessage:
        """The final response to the initial INVITE (2xx is ACKed automatically)."""
        assert self.invite_tx is not None
        return await asyncio.wait_for(asyncio.shield(self.invite_tx.final), timeout)

    async def wait_response(self, status: int, timeout: float = 10.0) -> SipMessage:
        """Wait for a response with this status (e.g. 180) to the initial INVITE."""
        assert self.invite_tx is not None
        tx = self.invite_tx
        async with asyncio.timeout(timeout):
            while True:
                for r in tx.responses:
                    if r.status == status:
                        return r
                tx.any_response.clear()
                await tx.any_response.wait()

    async def cancel(self, timeout: float = 10.0) -> SipMessage:
        """CANCEL the pending INVITE; returns the response to the CANCEL itself."""
        assert self.invite is not None
        inv = self.invite
        cancel = SipMessage(f"CANCEL {inv.uri} SIP/2.0")
        for name in ("via", "from", "to", "call-id", "route"):
            for value in inv.header_all(name)[:1] if name == "via" else inv.header_all(name):
                cancel.add(name.title() if name != "call-id" else "Call-ID", value)
        cancel.add("CSeq", f"{inv.cseq[0]} CANCEL").add("Max-Forwards", "70")
        return await self.ua._transact(cancel, self.peer, None, timeout)

    async def ack(self, response: SipMessage | None = None) -> None:
        """ACK a 2xx to our (re-)INVITE (done automatically by invite/reinvite)."""
        cseq = (response.cseq[0] if response is not None else self._ack_cseq)
        ack = self._in_dialog("ACK", cseq=cseq)
        self.ua._send(ack, self.peer)

    async def bye(self, timeout: float = 10.0) -> SipMessage:
        response = await self.request("BYE", timeout=timeout)
        self.state = "terminated"
        return response

    async def reinvite(self, sdp: str | bytes | None, timeout: float = 10.0,
                       headers: Sequence[tuple[str, str]] = ()) -> SipMessage:
        """Send a re-INVITE (e.g. new keys, hold); the 2xx is ACKed; returns the final."""
        return await self.request("INVITE", sdp, "application/sdp" if sdp else None, headers,
                                  timeout)

    async def request(self, method: str, body: str | bytes | None = None,
                      content_type: str | None = None,
                      headers: Sequence[tuple[str, str]] = (), timeout: float = 10.0
                      ) -> SipMessage:
        """Send an in-dialog request (INFO, UPDATE, OPTIONS, BYE, INVITE) and wait its final."""
        self.local_cseq += 1
        req = self._in_dialog(method, cseq=self.local_cseq)
        for name, value in headers:
            req.add(name, value)
        if body is not None:
            req.body = body.encode("latin-1") if isinstance(body, str) else body
            req.add("Content-Type", content_type or "application/sdp")
            if req.content_type == "application/sdp":
                self.local_sdp = req.body.decode("latin-1")
        if method == "INVITE":
            req.add("Contact", self.ua.contact)
        response = await self.ua._transact(req, self.peer, self, timeout)
        if method == "INVITE" and 200 <= response.status < 300:
            if response.sdp:
                self.remote_sdp = response.sdp
            await self.ack(response)
        elif method == "UPDATE" and response.sdp:
            self.remote_sdp = response.sdp
        return response

    def _in_dialog(self, method: str, cseq: int) -> SipMessage:
        req = SipMessage(f"{method} {self.remote_target} SIP/2.0")
        req.add("Via", self.ua._via(new_branch()))
        for route in self.route_set:
            req.add("Route", route)
        req.add("Max-Forwards", "70")
        req.add("From", f"<{self.local_uri}>;tag={self.local_tag}")
        to_tag = f";tag={self.remote_tag}" if self.remote_tag else ""
        req.add("To", f"<{self.remote_uri}>{to_tag}")
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{cseq} {method}")
        return req

    # ------------------------------------------------------------------ both sides

    async def wait_request(self, method: str, timeout: float = 10.0, count: int = 1
                           ) -> SipMessage:
        """The ``count``-th request of ``method`` the peer sent in this dialog."""
        async with asyncio.timeout(timeout):
            while True:
                found = [r for r in self.requests if r.method == method]
                if len(found) >= count:
                    return found[count - 1]
                self._changed.clear()
                await self._changed.wait()

    async def wait_ack(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._acked.wait(), timeout)

    async def wait_state(self, state: str, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.state != state:
                self._changed.clear()
                await self._changed.wait()


class _StreamConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = StreamFramer()
        peer = writer.get_extra_info("peername")
        self.peer: Address = (peer[0], peer[1])
        self.peer_cert = writer.get_extra_info("peercert")


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, ua: SipTestUA) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.ua._on_data(data, (addr[0], addr[1]), None)


class SipTestUA:
    """A SIP phone for tests. Create with ``await SipTestUA.start(...)``; ``await ua.close()``.

    ``transport`` is "udp", "tcp" or "tls". For TLS pass ``tls_server`` (an SSLContext with our
    certificate, used when peers connect to us) and/or ``tls_client`` (trust store, optional
    client certificate, used when we connect), and ``server_name`` for SNI/host-name checks.
    See ``tests.support.certs`` for contexts built from a dev key directory.
    """

    def __init__(self, transport: str, host: str, user: str, domain: str | None,
                 tls_server: ssl.SSLContext | None, tls_client: ssl.SSLContext | None,
                 server_name: str | None) -> None:
        if transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"unknown transport {transport!r}")
        self.transport = transport
        self.host = host
        self.user = user
        self.domain = domain or host
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.server_name = server_name
        self.port = 0
        self.uas = UasBehaviour()
        self.received: list[SipMessage] = []
        self.sent: list[SipMessage] = []
        self.parse_errors: list[bytes] = []
        self.connect_errors: list[Exception] = []
        self.dialogs: list[Dialog] = []
        self._incoming = asyncio.Queue[Dialog]()
        self._arrived = asyncio.Event()
        self._client_tx: dict[tuple[str, str], _ClientTx] = {}
        self._server_cache: dict[tuple[str, str], SipMessage] = {}
        self._pending_invites: dict[str, tuple[SipMessage, Dialog, Address,
                                               _StreamConn | None]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._conns: dict[Address, _StreamConn] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.base_events.Server | None = None

    @classmethod
    async def start(cls, transport: str = "udp", host: str = "127.0.0.1", port: int = 0, *,
                    user: str = "alice", domain: str | None = None,
                    tls_server: ssl.SSLContext | None = None,
                    tls_client: ssl.SSLContext | None = None,
                    server_name: str | None = None) -> SipTestUA:
        """Bind the listening socket (port 0 = any free port) and start serving."""
        ua = cls(transport, host, user, domain, tls_server, tls_client, server_name)
        loop = asyncio.get_running_loop()
        if transport == "udp":
            ua._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(ua),
                                                             local_addr=(host, port))
            ua.port = ua._udp.get_extra_info("sockname")[1]
        else:
            if transport == "tls" and tls_server is None:
                raise ValueError("a TLS UA needs tls_server to listen")
            ua._server = await asyncio.start_server(
                ua._accept, host, port, ssl=tls_server if transport == "tls" else None)
            ua.port = ua._server.sockets[0].getsockname()[1]
        return ua

    # ------------------------------------------------------------------ public helpers

    @property
    def local(self) -> Address:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        param = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{self.user}@{self._hostport()}{param}>"

    def requests(self, method: str | None = None) -> list[SipMessage]:
        return [m for m in self.received if m.is_request and (method is None or
                                                              m.method == method)]

    def responses(self, status: int | None = None) -> list[SipMessage]:
        return [m for m in self.received if not m.is_request and (status is None or
                                                                 m.status == status)]

    async def wait_for(self, predicate: Callable[[SipMessage], bool], timeout: float = 10.0
                       ) -> SipMessage:
        """The first received message (past or future) matching ``predicate``."""
        async with asyncio.timeout(timeout):
            while True:
                for m in self.received:
                    if predicate(m):
                        return m
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_call(self, timeout: float = 10.0) -> Dialog:
        """The next incoming call (a UAS dialog created by an INVITE)."""
        return await asyncio.wait_for(self._incoming.get(), timeout)

    async def invite(self, target: str, peer: Address, sdp: str | bytes | None = None, *,
                     headers: Sequence[tuple[str, str]] = (), from_uri: str | None = None,
                     wait: bool = False, timeout: float = 10.0,
                     max_forwards: int = 70) -> Dialog:
        """Send an INVITE to ``target`` (Request-URI) via ``peer`` (where the bytes go).

        Returns the dialog at once; ``await dialog.wait_final()`` for the outcome (a 2xx is
        ACKed automatically, a non-2xx by the transaction). ``wait=True`` waits here.
        """
        local_uri = from_uri or self.uri
        dialog = Dialog(self, f"{secrets.token_hex(8)}@{self.host}", new_tag(), local_uri,
                        target, peer, True)
        self.dialogs.append(dialog)
        req = SipMessage(f"INVITE {target} SIP/2.0")
        req.add("Via", self._via(new_branch()))
        req.add("Max-Forwards", str(max_forwards))
        req.add("From", f"<{local_uri}>;tag={dialog.local_tag}")
        req.add("To", f"<{target}>")
        req.add("Call-ID", dialog.call_id)
        req.add("CSeq", f"{dialog.local_cseq} INVITE")
        req.add("Contact", self.contact)
        req.add("Allow", ALLOW)
        req.add("User-Agent", "srtpgw-test-ua")
        for name, value in headers:
            req.add(name, value)
        if sdp is not None:
            req.body = sdp.encode("latin-1") if isinstance(sdp, str) else sdp
            req.add("Content-Type", "application/sdp")
            dialog.local_sdp = req.body.decode("latin-1")
        dialog.invite = req
        dialog.state = "calling"
        tx = self._start_tx(req, peer, dialog)
        dialog.invite_tx = tx
        if wait:
            await dialog.wait_final(timeout)
        return dialog

    async def options(self, target: str, peer: Address, timeout: float = 10.0,
                      headers: Sequence[tuple[str, str]] = (), max_forwards: int = 70
                      ) -> SipMessage:
        """An out-of-dialog OPTIONS; returns the final response."""
        return await self.request("OPTIONS", target, peer, headers=headers, timeout=timeout,
                                  max_forwards=max_forwards)

    async def request(self, method: str, target: str, peer: Address, *,
                      body: str | bytes | None = None, content_type: str | None = None,
                      headers: Sequence[tuple[str, str]] = (), timeout: float = 10.0,
                      max_forwards: int = 70) -> SipMessage:
        """Any out-of-dialog request (OPTIONS, MESSAGE, REGISTER...); returns the final."""
        req = SipMessage(f"{method} {target} SIP/2.0")
        req.add("Via", self._via(new_branch()))
        req.add("Max-Forwards", str(max_forwards))
        req.add("From", f"<{self.uri}>;tag={new_tag()}")
        req.add("To", f"<{target}>")
        req.add("Call-ID", f"{secrets.token_hex(8)}@{self.host}")
        req.add("CSeq", f"1 {method}")
        for name, value in headers:
            req.add(name, value)
        if body is not None:
            req.body = body.encode("latin-1") if isinstance(body, str) else body
            req.add("Content-Type", content_type or "text/plain")
        return await self._transact(req, peer, None, timeout)

    def send_raw(self, data: bytes, peer: Address) -> None:
        """Put arbitrary bytes on the wire to ``peer`` (malformed-message tests)."""
        self._write(data, peer, None)

    def send_message(self, msg: SipMessage, peer: Address) -> None:
        """Send a hand-built message as is (no transaction)."""
        self._send(msg, peer)

    def tls_peer_cert(self, peer: Address) -> dict | None:
        """The certificate the TLS peer at ``peer`` presented (as ssl's getpeercert())."""
        conn = self._conns.get(peer)
        return conn.peer_cert if conn is not None else None

    async def stop_listening(self) -> None:
        """Refuse inbound connections from now on, like a phone that is a TLS client only
        (its Via and Contact still name the port it listened on)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def drop_connections(self) -> None:
        """Close every connection, as a phone whose network went away does."""
        for conn in list(self._conns.values()):
            conn.writer.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for tx in self._client_tx.values():
            if not tx.final.done():
                tx.final.cancel()
        for conn in list(self._conns.values()):
            conn.writer.close()
        if self._server is not None:
            self._server.close()
        if self._udp is not None:
            self._udp.close()

    # ------------------------------------------------------------------ transport

    def _hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _via(self, branch: str) -> str:
        return f"SIP/2.0/{self.transport.upper()} {self._hostport()};branch={branch};rport"

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _StreamConn(reader, writer)
        self._conns[conn.peer] = conn
        # a start_server callback must not end cancelled: asyncio 3.11 reports that as an
        # "Exception in callback" traceback outside any structured log
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_loop(conn)

    async def _connect(self, peer: Address) -> _StreamConn:
        conn = self._conns.get(peer)
        if conn is not None and not conn.writer.is_closing():
            return conn
        tls = self.transport == "tls"
        if tls and self.tls_client is None:
            raise ValueError("a TLS UA needs tls_client to connect")
        reader, writer = await asyncio.open_connection(
            peer[0], peer[1], ssl=self.tls_client if tls else None,
            server_hostname=(self.server_name or peer[0]) if tls else None)
        conn = _StreamConn(reader, writer)
        self._conns[peer] = conn
        self._spawn(self._read_loop(conn))
        return conn

    async def _read_loop(self, conn: _StreamConn) -> None:
        try:
            while data := await conn.reader.read(65536):
                try:
                    messages = conn.framer.feed(data)
                except SipParseError:
                    self.parse_errors.append(data)
                    break
                for raw in messages:
                    self._on_data(raw, conn.peer, conn)
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            if self._conns.get(conn.peer) is conn:
                del self._conns[conn.peer]
            conn.writer.close()

    def _write(self, data: bytes, peer: Address, conn: _StreamConn | None) -> None:
        if self.transport == "udp":
            assert self._udp is not None
            self._udp.sendto(data, peer)
            return
        if conn is not None and not conn.writer.is_closing():
            conn.writer.write(data)
            return
        existing = self._conns.get(peer)
        if existing is not None and not existing.writer.is_closing():
            existing.writer.write(data)
            return
        self._spawn(self._connect_and_write(data, peer))

    async def _connect_and_write(self, data: bytes, peer: Address) -> None:
        """Connect (TLS handshake included); a failure fails every transaction to ``peer``."""
        try:
            conn = await self._connect(peer)
        except (OSError, ssl.SSLError) as exc:
            self.connect_errors.append(exc)
            for tx in self._client_tx.values():
                if tx.peer == peer and not tx.final.done():
                    tx.final.set_exception(ConnectionError(f"cannot connect to {peer}: {exc}"))
            return
        conn.writer.write(data)

    def _send(self, msg: SipMessage, peer: Address, conn: _StreamConn | None = None) -> None:
        self.sent.append(msg)
        self._write(msg.to_bytes(), peer, conn)

    # ------------------------------------------------------------------ client transactions

    def _start_tx(self, req: SipMessage, peer: Address, dialog: Dialog | None) -> _ClientTx:
        tx = _ClientTx(req, dialog, peer)
        assert req.branch is not None
        self._client_tx[(req.branch, req.method)] = tx
        self._send(req, peer)
        if self.transport == "udp":
            tx.retransmit = self._spawn(self._retransmit(tx, peer))
        return tx

    async def _retransmit(self, tx: _ClientTx, peer: Address) -> None:
        """Timer A/E: resend until a response (INVITE) or a final (others), 64*T1 at most."""
        interval, waited = T1, 0.0
        invite = tx.request.method == "INVITE"
        while waited < 64 * T1:
            await asyncio.sleep(interval)
            waited += interval
            if tx.final.done() or (invite and tx.responses):
                return
            self._write(tx.request.to_bytes(), peer, None)
            interval = interval * 2 if invite else min(interval * 2, T2)
        if not tx.final.done():
            tx.final.set_exception(TimeoutError(f"no final response to {tx.request.method}"))

    async def _transact(self, req: SipMessage, peer: Address, dialog: Dialog | None,
                        timeout: float) -> SipMessage:
        tx = self._start_tx(req, peer, dialog)
        return await asyncio.wait_for(asyncio.shield(tx.final), timeout)

    def _on_response(self, msg: SipMessage, peer: Address) -> None:
        tx = self._client_tx.get((msg.branch or "", msg.cseq[1]))
        if tx is None:
            return
        first_final = msg.status >= 200 and not tx.final.done()
        tx.responses.append(msg)
        tx.any_response.set()
        dialog = tx.dialog
        if dialog is not None:
            dialog.responses.append(msg)
        if msg.cseq[1] == "INVITE":
            self._on_invite_response(tx, msg, peer, first_final)
        if first_final:
            tx.final.set_result(msg)

    def _on_invite_response(self, tx: _ClientTx, msg: SipMessage, peer: Address,
                            first_final: bool) -> None:
        dialog = tx.dialog
        if msg.status >= 300:
            ack = SipMessage(f"ACK {tx.request.uri} SIP/2.0")
            ack.add("Via", tx.request.header("via") or "")
            for route in tx.request.header_all("route"):
                ack.add("Route", route)
            ack.add("Max-Forwards", "70")
            ack.add("From", tx.request.header("from") or "")
            ack.add("To", msg.header("to") or "")
            ack.add("Call-ID", tx.request.call_id)
            ack.add("CSeq", f"{tx.request.cseq[0]} ACK")
            self._send(ack, peer)
            if dialog is not None and dialog.invite is tx.request:
                dialog.state = "terminated"
                dialog._changed.set()
            return
        if dialog is None or msg.status < 101:
            return
        initial = dialog.invite is tx.request
        if msg.to_tag and initial:
            dialog.remote_tag = msg.to_tag
            if msg.contact_uri:
                dialog.remote_target = msg.contact_uri
            dialog.route_set = list(reversed(msg.header_all("record-route")))
        if msg.sdp:
            dialog.remote_sdp = msg.sdp
        if 200 <= msg.status < 300:
            if initial:
                dialog.state = "confirmed"
                dialog._ack_cseq = msg.cseq[0]
                self._spawn(dialog.ack(msg))  # retransmitted 2xx are ACKed again
            elif not first_final:
                self._spawn(dialog.ack(msg))
        elif initial and dialog.state == "calling":
            dialog.state = "early"
        dialog._changed.set()

    # ------------------------------------------------------------------ server side

    def _on_data(self, data: bytes, peer: Address, conn: _StreamConn | None) -> None:
        if not data.strip():
            return
        try:
            msg = parse_message(data, peer, self.transport)
        except SipParseError:
            self.parse_errors.append(data)
            return
        self.received.append(msg)
        self._arrived.set()
        if msg.is_request:
            self._on_request(msg, peer, conn)
        else:
            self._on_response(msg, peer)

    def _find_dialog(self, msg: SipMessage) -> Dialog | None:
        for d in self.dialogs:
            if d.call_id == msg.call_id and d.local_tag == msg.to_tag:
                return d
        return None

    def _respond(self, req: SipMessage, status: int, peer: Address, conn: _StreamConn | None,
                 *, to_tag: str | None = None, body: str | bytes | None = None,
                 headers: Sequence[tuple[str, str]] = ()) -> SipMessage:
        resp = SipMessage(f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}")
        for via in req.header_all("via"):
            resp.add("Via", via)
        if status > 100 and req.method == "INVITE":
            for rr in req.header_all("record-route"):
                resp.add("Record-Route", rr)
        resp.add("From", req.header("from") or "")
        to = req.header("to") or ""
        if to_tag and not req.to_tag and status > 100:
            to += f";tag={to_tag}"
        resp.add("To", to)
        resp.add("Call-ID", req.call_id)
        resp.add("CSeq", req.header("cseq") or "")
        if req.method in ("INVITE", "UPDATE") and 100 < status < 300:
            resp.add("Contact", self.contact)
        if req.method == "OPTIONS":
            resp.add("Allow", ALLOW)
        for name, value in headers:
            resp.add(name, value)
        if body is not None:
            resp.body = body.encode("latin-1") if isinstance(body, str) else body
            resp.add("Content-Type", "application/sdp")
        if status >= 200 and req.method != "INVITE":
            self._server_cache[(req.branch or "", req.method)] = resp
        self._send(resp, peer, conn)
        return resp

    def _on_request(self, req: SipMessage, peer: Address, conn: _StreamConn | None) -> None:
        key = (req.branch or "", req.method)
        if key in self._server_cache:
            self._send(self._server_cache[key], peer, conn)  # retransmitted request
            return
        method = req.method
        if method == "ACK":
            dialog = self._find_dialog(req)
            if dialog is not None:
                dialog.requests.append(req)
                dialog._acked.set()
                dialog._changed.set()
            return
        if method == "CANCEL":
            self._respond(req, 200, peer, conn)
            pending = self._pending_invites.pop(req.branch or "", None)
            if pending is not None:
                invite, dialog, ipeer, iconn = pending
                dialog.state = "terminated"
                self._server_cache[(invite.branch or "", "INVITE")] = self._respond(
                    invite, 487, ipeer, iconn, to_tag=dialog.local_tag)
                dialog._changed.set()
            return
        if req.to_tag is None and method == "INVITE":
            if (req.branch or "") in self._pending_invites:
                return  # retransmission of an INVITE we are still answering
            self._new_call(req, peer, conn)
            return
        if req.to_tag is None:
            status = self.uas.status_for.get(method, 200)
            self._respond(req, status, peer, conn, to_tag=new_tag(),
                          headers=self.uas.extra_headers)
            return
        dialog = self._find_dialog(req)
        if dialog is None:
            self._respond(req, 481, peer, conn)
            return
        dialog.requests.append(req)
        dialog._changed.set()
        self._in_dialog_request(dialog, req, peer, conn)

    def _in_dialog_request(self, dialog: Dialog, req: SipMessage, peer: Address,
                           conn: _StreamConn | None) -> None:
        method = req.method
        if method in ("INVITE", "UPDATE"):
            status = self.uas.reinvite_status if method == "INVITE" else \
                self.uas.status_for.get(method, 200)
            body = None
            if req.sdp:
                dialog.remote_sdp = req.sdp
                answer_fn = self.uas.reinvite_answer or self.uas.answer
                if 200 <= status < 300 and answer_fn is not None:
                    body = answer_fn(req)
            if body is not None:
                dialog.local_sdp = body.decode("latin-1") if isinstance(body, bytes) else body
            resp = self._respond(req, status, peer, conn, body=body,
                                 headers=self.uas.extra_headers)
            if method == "INVITE":
                self._server_cache[(req.branch or "", "INVITE")] = resp
                if 200 <= status < 300 and self.transport == "udp":
                    dialog._acked.clear()
                    self._spawn(self._retransmit_2xx(dialog, resp, peer))
            return
        status = self.uas.status_for.get(method, 200)
        self._respond(req, status, peer, conn, headers=self.uas.extra_headers)
        if method == "BYE" and status < 300:
            dialog.state = "terminated"

    def _new_call(self, req: SipMessage, peer: Address, conn: _StreamConn | None) -> None:
        from_value = req.header("from") or ""
        dialog = Dialog(self, req.call_id, new_tag(), uri_of(req.header("to") or req.uri),
                        uri_of(from_value), peer, False)
        dialog.remote_tag = req.from_tag
        dialog.remote_target = req.contact_uri or dialog.remote_uri
        dialog.route_set = req.header_all("record-route")
        dialog.invite = req
        dialog.remote_sdp = req.sdp
        dialog.state = "early"
        self.dialogs.append(dialog)
        self._incoming.put_nowait(dialog)
        self._pending_invites[req.branch or ""] = (req, dialog, peer, conn)
        self._respond(req, 100, peer, conn)
        self._spawn(self._answer_call(dialog, req, peer, conn))

    async def _answer_call(self, dialog: Dialog, req: SipMessage, peer: Address,
                           conn: _StreamConn | None) -> None:
        statuses = list(self.uas.invite_statuses)
        for i, status in enumerate(statuses):
            if i and self.uas.delay:
                await asyncio.sleep(self.uas.delay)
            if dialog.state == "terminated":
                return
            body = None
            if (status == 183 or 200 <= status < 300) and self.uas.answer is not None \
                    and req.sdp:
                body = self.uas.answer(req)
                if body is not None:
                    dialog.local_sdp = body.decode("latin-1") if isinstance(body, bytes) \
                        else body
            resp = self._respond(req, status, peer, conn, to_tag=dialog.local_tag, body=body,
                                 headers=self.uas.extra_headers)
            if status >= 200:
                self._pending_invites.pop(req.branch or "", None)
                self._server_cache[(req.branch or "", "INVITE")] = resp
                if status < 300:
                    dialog.state = "confirmed"
                    if self.transport == "udp":
                        self._spawn(self._retransmit_2xx(dialog, resp, peer))
                else:
                    dialog.state = "terminated"
                dialog._changed.set()
                return

    async def _retransmit_2xx(self, dialog: Dialog, resp: SipMessage, peer: Address) -> None:
        """RFC 3261 §13.3.1.4: resend the 2xx until the ACK arrives (64*T1 at most)."""
        interval, waited = T1, 0.0
        while waited < self.uas.ack_timeout:
            try:
                await asyncio.wait_for(dialog._acked.wait(), interval)
                return
            except TimeoutError:
                waited += interval
                interval = min(interval * 2, T2)
                self._write(resp.to_bytes(), peer, None)
