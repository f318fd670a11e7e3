"""The probe's legacy side: a UDP UAS on ``--legacy-side`` that the target calls into.

It answers INVITEs 200 with its own marked SDP (plain RTP, or SDES with a fresh key when offered
SRTP), BYE/OPTIONS/CANCEL as RFC 3261 asks, and records every request, so the topology check can
see what crossed the target and the bleed check knows where the target sends legacy media.
It only ever answers: its responses go back to the source of the request (RFC 3581 style).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from gateway.sdp.errors import SdpError
from gateway.sdp.model import parse_sdp
from gateway.sip.errors import SipParseError
from gateway.sip.message import SipRequest, parse_message
from gateway.tools.probe.media import build_offer
from gateway.tools.probe.target import Address
from gateway.tools.probe.wire import MediaSocket

MAX_REQUESTS = 200


@dataclass
class Received:
    request: SipRequest
    source: Address


@dataclass
class LegacySide:
    """Runs in a thread between ``start`` and ``stop``; ``mark`` goes into every answer."""

    address: Address
    mark: str
    media: MediaSocket
    requests: list[Received] = field(default_factory=list)
    answered_offers: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        fam = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-legacy", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with contextlib.suppress(OSError):
            self.sock.close()

    def invites(self) -> list[Received]:
        return [r for r in self.requests if r.request.method == "INVITE"]

    def sources(self) -> set[str]:
        return {r.source[0] for r in self.requests}

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set() and len(self.requests) < MAX_REQUESTS:
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            try:
                msg = parse_message(data)
            except SipParseError:
                continue
            if isinstance(msg, SipRequest):
                self.requests.append(Received(msg, addr[:2]))
                self._answer(msg, addr[:2])

    def _answer(self, req: SipRequest, source: Address) -> None:
        to_tag = f"{self.mark}lt"
        if req.method == "ACK":
            return
        if req.method == "INVITE":
            resp = req.create_response(200, to_tag=to_tag)
            host = self.media.local[0]
            suites: list[str] = []
            try:
                offer = parse_sdp(req.body) if req.body else None
            except SdpError:
                offer = None
            if offer is not None:
                audio = next((m for m in offer.media if m.kind == "audio"), None)
                if audio is not None and "SAVP" in audio.proto and audio.get_all("crypto"):
                    suite = audio.get_all("crypto")[0].split()[1]
                    suites = [suite] if suite in ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM",
                                                  "AEAD_AES_256_GCM",
                                                  "AES_CM_128_HMAC_SHA1_32") else []
                proto = audio.proto if audio is not None and suites else "RTP/AVP"
            else:
                proto = "RTP/AVP"
            answer = build_offer(host, self.media.local[1], proto, suites, mark=self.mark)
            self.answered_offers.append(answer.body)
            resp.headers.add("Contact", f"<sip:{self.mark}@{self._hostport()}>")
            resp.headers.add("X-Probe-Mark", self.mark)
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = answer.body
        elif req.method in ("BYE", "OPTIONS", "CANCEL", "UPDATE", "INFO"):
            resp = req.create_response(200, to_tag=to_tag)
        else:
            resp = req.create_response(405, to_tag=to_tag)
        with contextlib.suppress(OSError):
            self.sock.sendto(resp.to_bytes(), source)

    def _hostport(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
