"""A tiny SIP phone for ``srtpgw demo``: just enough SIP and RTP to place, answer and end a call.

One class plays both demo roles: the legacy phone (SIP over UDP, plain RTP) and the secure phone
(SIP over TLS, SDES-SRTP). Each phone stamps its audio with a marker and reports what it saw on
the wire, so the demo can show that the secure side never carried the legacy side's plaintext.
It is a demonstration peer, not a general user agent: one call at a time, no retransmissions.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pylibsrtp

from gateway.ops.log import redact_text
from gateway.sdp.crypto import format_crypto, parse_crypto
from gateway.sdp.errors import SdpError
from gateway.sdp.model import parse_sdp
from gateway.sip.errors import SipParseError
from gateway.sip.message import SipRequest, SipResponse, parse_message

Address = tuple[str, int]

PROFILES = {
    "AEAD_AES_256_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 44),
    "AEAD_AES_128_GCM": (pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 28),
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 30),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 30),
}
PAYLOAD_SIZE = 160  # 20 ms of PCMU


class DemoError(Exception):
    """The demo call did not go as a SIP/RTP peer expects."""


@dataclass(slots=True)
class MediaReport:
    """What one phone saw on its RTP socket."""

    sent: int = 0
    received: int = 0
    rtcp_received: int = 0
    peer_marker_in_clear: int = 0  # received packets whose raw bytes show the peer's marker
    peer_audio_ok: int = 0  # packets whose (decrypted) payload is the peer's audio
    auth_failures: int = 0
    before_keys: int = 0
    suite: str | None = None
    remote: Address | None = None
    first_raw: bytes = b""


@dataclass(slots=True)
class _Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str
    remote_uri: str
    remote_target: str
    cseq: int
    send: Callable[[bytes], None]


@dataclass(slots=True)
class _Srtp:
    suite: str
    tx: pylibsrtp.Session
    rx: pylibsrtp.Session


def _session(suite: str, material: bytes, inbound: bool) -> pylibsrtp.Session:
    profile, _ = PROFILES[suite]
    ssrc = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    policy = pylibsrtp.Policy(key=material, ssrc_type=ssrc, srtp_profile=profile)
    if not inbound:
        policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy=policy)


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, phone: DemoPhone) -> None:
        self.phone = phone

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.phone._on_rtp(data)


class _SipUdp(asyncio.DatagramProtocol):
    def __init__(self, phone: DemoPhone) -> None:
        self.phone = phone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        def reply(out: bytes) -> None:
            assert self.transport is not None
            self.phone._trace_out(out)
            self.transport.sendto(out, addr)
        self.phone._on_sip(data, reply)


class DemoPhone:
    """A phone on 127.0.0.1 with a SIP socket (UDP or TLS server) and one RTP socket."""

    def __init__(self, name: str, marker: bytes, *, transport: Literal["udp", "tls"],
                 media: Literal["rtp", "srtp"], host: str = "127.0.0.1",
                 server_tls: ssl.SSLContext | None = None,
                 client_tls: ssl.SSLContext | None = None,
                 server_name: str = "gateway.srtpgw.test",
                 suites: tuple[str, ...] = tuple(PROFILES)) -> None:
        self.name = name
        self.marker = marker
        self.transport = transport
        self.media = media
        self.host = host
        self.server_tls = server_tls
        self.client_tls = client_tls
        self.server_name = server_name
        self.suites = suites
        self.trace: list[str] = []
        self.report = MediaReport()
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.incoming_invite: SipRequest | None = None
        self.last_final: SipResponse | None = None  # our INVITE's final response
        self._udp: _SipUdp | None = None
        self._server: asyncio.Server | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._dialog: _Dialog | None = None
        self._srtp: _Srtp | None = None
        self._offer_keys: dict[int, tuple[str, bytes]] = {}
        self._pending: dict[tuple[int, str], asyncio.Future[SipResponse]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(15)
        self.sip_port = 0
        self.rtp_port = 0
        self.packets = 50  # audio packets per call, 20 ms apart (the call may end sooner)
        self._answer_sdp = b""
        self._peer_marker: bytes | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        rtp, _ = await loop.create_datagram_endpoint(lambda: _Rtp(self),
                                                     local_addr=(self.host, 0))
        self._rtp = rtp
        self.rtp_port = rtp.get_extra_info("sockname")[1]
        if self.transport == "udp":
            t, proto = await loop.create_datagram_endpoint(lambda: _SipUdp(self),
                                                           local_addr=(self.host, 0))
            self._udp = proto
            self.sip_port = t.get_extra_info("sockname")[1]
        elif self.server_tls is not None:  # without one, a TLS phone can only place calls
            self._server = await asyncio.start_server(self._serve_tls, self.host, 0,
                                                      ssl=self.server_tls)
            self.sip_port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._rtp is not None:
            self._rtp.close()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ SIP transport

    async def _serve_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> None:
        def reply(out: bytes) -> None:
            self._trace_out(out)
            writer.write(out)
        # A start_server callback must not end cancelled (loop shutting down): asyncio 3.11
        # then reports "Exception in callback" as a plain-text traceback.
        with contextlib.suppress(asyncio.CancelledError):
            await self._read_stream(reader, reply)
        writer.close()

    async def _read_stream(self, reader: asyncio.StreamReader,
                           reply: Callable[[bytes], None]) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.strip() == b"":
                    continue  # CRLF keep-alive
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() in (b"content-length", b"l"):
                        length = int(value.strip() or b"0")
                body = await reader.readexactly(length) if length else b""
                self._on_sip(head + body, reply)

    async def _connect(self, target: Address) -> Callable[[bytes], None]:
        if self.transport == "udp":
            assert self._udp is not None and self._udp.transport is not None
            udp = self._udp.transport

            def send_udp(out: bytes) -> None:
                self._trace_out(out)
                udp.sendto(out, target)
            return send_udp
        reader, writer = await asyncio.open_connection(
            target[0], target[1], ssl=self.client_tls, server_hostname=self.server_name)
        if not self.sip_port:
            self.sip_port = writer.get_extra_info("sockname")[1]

        def send_tls(out: bytes) -> None:
            self._trace_out(out)
            writer.write(out)
        self._spawn(self._read_stream(reader, send_tls))
        return send_tls

    def _trace_out(self, data: bytes) -> None:
        self.trace.append("-> " + data.split(b"\r\n", 1)[0].decode("ascii", "replace"))
        self._trace_sdp(data.partition(b"\r\n\r\n")[2])

    def _trace_sdp(self, body: bytes) -> None:
        """The SDP lines that say how media is carried; SDES keys shown redacted."""
        for line in body.decode("latin-1").splitlines():
            if line.startswith(("m=", "a=crypto:", "a=fingerprint:")):
                self.trace.append("       " + redact_text(line))

    def _via(self, branch: str) -> str:
        proto = "UDP" if self.transport == "udp" else "TLS"
        return f"SIP/2.0/{proto} {self.host}:{self.sip_port};branch={branch};rport"

    @property
    def contact(self) -> str:
        tp = ";transport=tls" if self.transport == "tls" else ""
        scheme = "sips" if self.transport == "tls" else "sip"
        return f"<{scheme}:{self.name}@{self.host}:{self.sip_port}{tp}>"

    # ------------------------------------------------------------------ SIP: placing a call

    async def call(self, target: Address, request_uri: str, *, timeout: float = 10.0) -> int:
        """Send an INVITE; return the final status (ACKed). Media starts on 2xx."""
        send = await self._connect(target)
        call_id = secrets.token_hex(10)
        tag = secrets.token_hex(4)
        local_uri = f"sip:{self.name}@{self.host}"
        self._dialog = _Dialog(call_id, tag, None, local_uri, request_uri, request_uri, 1, send)
        body = self._sdp(self._offer_media())
        branch = "z9hG4bK" + secrets.token_hex(8)
        fut = self._expect(1, "INVITE")
        send(self._request("INVITE", request_uri, branch, 1, body))
        resp = await asyncio.wait_for(fut, timeout)
        self.last_final = resp
        d = self._dialog
        d.remote_tag = resp.to.tag
        if resp.status >= 300:
            send(self._ack(request_uri, branch, resp))
            return resp.status
        if resp.contact:
            d.remote_target = str(resp.contact[0].uri)
        send(self._ack(d.remote_target, "z9hG4bK" + secrets.token_hex(8), resp))
        self._answer_received(resp.body)
        self.answered.set()
        return resp.status

    async def hangup(self, timeout: float = 5.0) -> int:
        d = self._dialog
        if d is None:
            raise DemoError(f"{self.name}: no call to hang up")
        d.cseq += 1
        fut = self._expect(d.cseq, "BYE")
        d.send(self._request("BYE", d.remote_target, "z9hG4bK" + secrets.token_hex(8), d.cseq))
        resp = await asyncio.wait_for(fut, timeout)
        self.ended.set()
        return resp.status

    def _expect(self, cseq: int, method: str) -> asyncio.Future[SipResponse]:
        fut: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._pending[(cseq, method)] = fut
        return fut

    def _request(self, method: str, uri: str, branch: str, cseq: int, body: bytes = b""
                 ) -> bytes:
        d = self._dialog
        assert d is not None
        to_tag = f";tag={d.remote_tag}" if d.remote_tag else ""
        lines = [f"{method} {uri} SIP/2.0", f"Via: {self._via(branch)}", "Max-Forwards: 70",
                 f"From: <{d.local_uri}>;tag={d.local_tag}", f"To: <{d.remote_uri}>{to_tag}",
                 f"Call-ID: {d.call_id}", f"CSeq: {cseq} {method}", f"Contact: {self.contact}",
                 "User-Agent: srtpgw-demo-phone"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def _ack(self, uri: str, branch: str, resp: SipResponse) -> bytes:
        d = self._dialog
        assert d is not None
        lines = [f"ACK {uri} SIP/2.0", f"Via: {self._via(branch)}", "Max-Forwards: 70",
                 f"From: <{d.local_uri}>;tag={d.local_tag}", f"To: {resp.headers.get('To')}",
                 f"Call-ID: {d.call_id}", "CSeq: 1 ACK", "Content-Length: 0"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    # ------------------------------------------------------------------ SIP: receiving

    def _on_sip(self, data: bytes, reply: Callable[[bytes], None]) -> None:
        try:
            msg = parse_message(data, stream=self.transport == "tls")
        except SipParseError as exc:
            self.trace.append(f"<- unparseable ({exc})")
            return
        if isinstance(msg, SipResponse):
            self.trace.append(f"<- {msg.status} {msg.reason}")
            self._trace_sdp(msg.body)
            fut = self._pending.get((msg.cseq.number, msg.cseq.method))
            if msg.status >= 200 and fut is not None and not fut.done():
                fut.set_result(msg)
            return
        self.trace.append(f"<- {msg.method} {msg.uri}")
        self._trace_sdp(msg.body)
        if msg.method == "INVITE":
            self._on_invite(msg, reply)
        elif msg.method == "ACK":
            self.answered.set()
        elif msg.method == "BYE":
            reply(msg.create_response(200).to_bytes())
            self.ended.set()
        elif msg.method == "OPTIONS":
            reply(msg.create_response(200).to_bytes())
        else:
            reply(msg.create_response(501).to_bytes())

    def _on_invite(self, msg: SipRequest, reply: Callable[[bytes], None]) -> None:
        if self._dialog is not None and self._dialog.call_id == msg.call_id:
            reply(self._answer_invite(msg).to_bytes())  # a retransmission: same answer again
            return
        self.incoming_invite = msg
        tag = secrets.token_hex(4)
        self._dialog = _Dialog(msg.call_id, tag, msg.from_.tag, str(msg.to.uri),
                               str(msg.from_.uri),
                               str(msg.contact[0].uri) if msg.contact else str(msg.from_.uri),
                               0, reply)
        reply(msg.create_response(100).to_bytes())
        try:
            self._answer_sdp = self._read_offer(msg.body)
        except (DemoError, SdpError) as exc:
            self.trace.append(f"   offer refused: {exc}")
            reply(msg.create_response(488, to_tag=tag).to_bytes())
            return
        reply(msg.create_response(180, to_tag=tag).to_bytes())
        reply(self._answer_invite(msg).to_bytes())

    def _answer_invite(self, msg: SipRequest) -> SipResponse:
        assert self._dialog is not None
        resp = msg.create_response(200, to_tag=self._dialog.local_tag)
        resp.headers.add("Contact", self.contact)
        resp.headers.add("Content-Type", "application/sdp")
        resp.body = self._answer_sdp
        return resp

    # ------------------------------------------------------------------ SDP and SRTP

    def _sdp(self, media_lines: list[str]) -> bytes:
        lines = ["v=0", f"o=- {secrets.randbits(31)} 1 IN IP4 {self.host}", "s=srtpgw demo",
                 f"c=IN IP4 {self.host}", "t=0 0", *media_lines]
        return ("\r\n".join(lines) + "\r\n").encode()

    def _offer_media(self) -> list[str]:
        proto = "RTP/SAVP" if self.media == "srtp" else "RTP/AVP"
        out = [f"m=audio {self.rtp_port} {proto} 0", "a=rtpmap:0 PCMU/8000", "a=ptime:20",
               "a=sendrecv"]
        if self.media == "srtp":
            for tag, suite in enumerate(self.suites, 1):
                material = secrets.token_bytes(PROFILES[suite][1])
                self._offer_keys[tag] = (suite, material)
                out.append(f"a=crypto:{format_crypto(tag, suite, material)}")
        return out

    def _answer_received(self, body: bytes) -> None:
        sdp = parse_sdp(body)
        m = next((m for m in sdp.media if m.kind == "audio" and not m.rejected), None)
        conn = sdp.connection_for(m) if m else None
        if m is None or conn is None:
            raise DemoError(f"{self.name}: the answer has no usable audio stream")
        self.report.remote = (conn.address, m.port)
        if self.media == "srtp":
            cryptos = [parse_crypto(v) for v in m.get_all("crypto")]
            if not cryptos or cryptos[0].tag not in self._offer_keys:
                raise DemoError(f"{self.name}: the answer accepted none of our a=crypto lines")
            suite, ours = self._offer_keys[cryptos[0].tag]
            self._srtp = _Srtp(suite, _session(suite, ours, False),
                               _session(suite, cryptos[0].material, True))
            self.report.suite = suite
        self._spawn(self._send_audio())

    def _read_offer(self, body: bytes) -> bytes:
        sdp = parse_sdp(body)
        m = next((m for m in sdp.media if m.kind == "audio" and not m.rejected), None)
        conn = sdp.connection_for(m) if m else None
        if m is None or conn is None:
            raise DemoError("no audio stream offered")
        self.report.remote = (conn.address, m.port)
        lines = [f"m=audio {self.rtp_port} {m.proto} 0", "a=rtpmap:0 PCMU/8000", "a=ptime:20",
                 "a=sendrecv"]
        if m.rtcp_mux:
            lines.append("a=rtcp-mux")
        if self.media == "srtp":
            offered = [parse_crypto(v) for v in m.get_all("crypto")]
            chosen = next((c for c in offered if c.suite in self.suites), None)
            if chosen is None:
                raise DemoError("no acceptable a=crypto offered")
            ours = secrets.token_bytes(PROFILES[chosen.suite][1])
            self._srtp = _Srtp(chosen.suite, _session(chosen.suite, ours, False),
                               _session(chosen.suite, chosen.material, True))
            self.report.suite = chosen.suite
            lines.append(f"a=crypto:{format_crypto(chosen.tag, chosen.suite, ours)}")
        elif "SAVP" in m.proto:
            raise DemoError("an SRTP offer to a plain-RTP phone")
        self._spawn(self._send_audio())
        return self._sdp(lines)

    # ------------------------------------------------------------------ RTP

    def packet(self) -> bytes:
        """One RTP packet of our audio: the marker repeated over a 160-byte PCMU payload."""
        self._seq = (self._seq + 1) & 0xFFFF
        header = struct.pack("!BBHII", 0x80, 0, self._seq, self._seq * 160, self._ssrc)
        payload = (self.marker * (PAYLOAD_SIZE // len(self.marker) + 1))[:PAYLOAD_SIZE]
        return header + payload

    async def _send_audio(self, interval: float = 0.02) -> None:
        for _ in range(self.packets):
            if self.ended.is_set():
                return
            if self.report.remote is not None and self._rtp is not None:
                pkt = self.packet()
                if self._srtp is not None:
                    pkt = self._srtp.tx.protect(pkt)
                self._rtp.sendto(pkt, self.report.remote)
                self.report.sent += 1
            await asyncio.sleep(interval)

    def _on_rtp(self, data: bytes) -> None:
        if len(data) >= 2 and 200 <= data[1] <= 206:
            self.report.rtcp_received += 1
            return
        r = self.report
        if self.media == "srtp" and self._srtp is None:
            r.before_keys += 1  # the answerer may start sending before our answer arrived
            return
        r.received += 1
        if not r.first_raw:
            r.first_raw = data
        if self._peer_marker is not None and self._peer_marker in data:
            r.peer_marker_in_clear += 1
        if self._srtp is not None:
            try:
                data = self._srtp.rx.unprotect(data)
            except pylibsrtp.Error:
                r.auth_failures += 1
                return
        if self._peer_marker is not None and self._peer_marker in data[12:]:
            r.peer_audio_ok += 1

    def expect_peer_marker(self, marker: bytes) -> None:
        """The marker the other phone stamps on its audio (to recognise it, and its plaintext)."""
        self._peer_marker = marker


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    return ctx
