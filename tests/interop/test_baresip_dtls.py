"""baresip's dtls_srtp module against our DTLS-SRTP leg on the real relay, both offer directions.

No B2BUA yet: a minimal SIP UA in this file does the INVITE/200/ACK/BYE over UDP and uses
``gateway.sdp.dtls`` + ``DtlsLeg`` exactly as the call layer will. Leg 0 of the relay session is
DTLS-SRTP toward baresip, leg 1 plain PCMU toward a Python endpoint; each side plays its own tone
and must hear the other's.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import struct
from pathlib import Path

import pytest
import uvloop

from gateway.config import MediaSection
from gateway.media.api import LegConfig
from gateway.media.dtls_events import HandshakeCompleted
from gateway.media.dtls_identity import DtlsIdentity
from gateway.media.dtls_leg import DtlsLeg
from gateway.media.relay import MediaRelay
from gateway.ops.keys import init_keys
from gateway.sdp import parse_sdp
from gateway.sdp.dtls import (
    answer_setup,
    check_fingerprints,
    dtls_attributes,
    dtls_params,
    new_tls_id,
    role_for_setup,
    role_from_answer,
)
from gateway.sip.message import SipRequest, SipResponse, parse_message
from tests.conftest import require_tool
from tests.interop.baresip import Softphone
from tests.interop.procs import Procs, free_port
from tests.interop.tone import read_samples, tone_coverage, ulaw_decode

pytestmark = [pytest.mark.interop,
              pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")]

GW = "127.0.0.1"
CALL_SECONDS = 5
OUR_TONE = 1000.0
BARESIP_TONE = 600.0


@pytest.fixture
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


def ulaw_encode(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


class PlainPhone(asyncio.DatagramProtocol):
    """The legacy side: plays a PCMU tone to the relay, keeps the payload it hears."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.heard = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
            self.heard += data[12:]

    async def play(self, to: tuple[str, int], seconds: float) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        step = 2 * math.pi * OUR_TONE / 8000
        for n in range(int(seconds * 50)):
            payload = bytes(ulaw_encode(int(8000 * math.sin(step * (n * 160 + i))))
                            for i in range(160))
            header = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, n * 160, 0x0DDBA11)
            self.transport.sendto(header + payload, to)
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))


class MiniUa(asyncio.DatagramProtocol):
    """Just enough SIP over UDP for one call: answers INVITE/BYE, or sends INVITE/ACK/BYE."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: asyncio.Queue[tuple[SipRequest, tuple[str, int]]] = asyncio.Queue()
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return
        msg = parse_message(data)
        if isinstance(msg, SipRequest):
            self.requests.put_nowait((msg, addr))
        else:
            self.responses.put_nowait(msg)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def send(self, text: str, body: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        head = text.replace("\n", "\r\n") + f"Content-Length: {len(body)}\r\n\r\n"
        self.transport.sendto(head.encode() + body, to)

    def respond(self, request: SipRequest, status: int, to: tuple[str, int], tag: str,
                sdp: bytes = b"") -> None:
        response = request.create_response(status, to_tag=tag)
        response.headers.add("Contact", f"<sip:gw@{GW}:{self.port}>")
        if sdp:
            response.headers.add("Content-Type", "application/sdp")
        response.body = sdp
        assert self.transport is not None
        self.transport.sendto(response.to_bytes(), to)

    async def final_response(self) -> SipResponse:
        while True:
            response = await asyncio.wait_for(self.responses.get(), 15.0)
            if response.status >= 200:
                return response


class MuxPhone(Softphone):
    """baresip with rtcp_mux on, to match the mini UA's muxed SDP here (without it baresip runs
    a second DTLS association on its RTCP port, RFC 5764 §4.1: covered through the whole
    gateway by test_baresip_dtls_gateway.py::test_dtls_carrier_without_rtcp_mux)."""

    def write_config(self) -> None:
        super().write_config()
        config = self.dir / "config"
        config.write_text(config.read_text().replace("rtcp_mux\t\tno", "rtcp_mux\t\tyes"))


def our_sdp(port: int, attributes: tuple[object, ...], feedback: bool = False) -> bytes:
    proto = "UDP/TLS/RTP/SAVPF" if feedback else "UDP/TLS/RTP/SAVP"
    lines = ["v=0", f"o=srtpgw 1 1 IN IP4 {GW}", "s=-", f"c=IN IP4 {GW}", "t=0 0",
             f"m=audio {port} {proto} 0", "a=rtpmap:0 PCMU/8000", "a=rtcp-mux",
             "a=sendrecv", *(f"a={a}" for a in attributes)]
    return ("\r\n".join(lines) + "\r\n").encode()


class Gateway:
    """The relay session and its DTLS leg, driven from the mini UA."""

    def __init__(self, relay: MediaRelay, identity: DtlsIdentity, phone: PlainPhone) -> None:
        self.relay = relay
        self.info = relay.create_session_now()
        self.sid = self.info.session_id
        loop = asyncio.get_running_loop()
        self.outcome: asyncio.Future[object] = loop.create_future()
        self.leg = DtlsLeg(relay, self.sid, 0, 0, identity, new_tls_id(),
                           on_failed=lambda r: self.outcome.done() or self.outcome.set_result(r),
                           on_connected=lambda e: self.outcome.done()
                           or self.outcome.set_result(e),
                           accept_sha1=False, handshake_timeout=8.0,
                           # baresip's media sockets are bound to 0.0.0.0: on loopback its
                           # datagrams come from 127.0.0.1, not the address in its SDP.
                           nat_learning=True)
        assert phone.transport is not None
        relay.update_leg_now(self.sid, 1, 0,
                             LegConfig(remote_rtp=phone.transport.get_extra_info("sockname")))

    @property
    def dtls_port(self) -> int:
        return self.info.local(0).rtp[1]

    @property
    def plain_addr(self) -> tuple[str, int]:
        return self.info.local(1).rtp

    def remote(self, sdp: bytes) -> tuple[tuple[str, int], list[tuple[str, str]], object]:
        desc = parse_sdp(sdp)
        media = desc.media[0]
        params = dtls_params(desc, media)
        check_fingerprints(params, accept_sha1=False)
        conn = desc.connection_for(media)
        assert conn is not None
        return (conn.address, media.port), list(params.fingerprints), params

    def start(self, role: str, remote: tuple[str, int],
              fingerprints: list[tuple[str, str]]) -> None:
        base = LegConfig(remote_rtp=remote)
        self.leg.start(role, remote, fingerprints, base)  # type: ignore[arg-type]
        self.relay.update_leg_now(self.sid, 0, 0, self.leg.config(base))


async def run_media(gw: Gateway, phone: PlainPhone) -> HandshakeCompleted:
    event = await asyncio.wait_for(gw.outcome, 15.0)
    assert isinstance(event, HandshakeCompleted), f"DTLS failed: {event}"
    await phone.play(gw.plain_addr, CALL_SECONDS - 1)
    return event


def check_audio(gw: Gateway, phone: PlainPhone, baresip: Softphone) -> None:
    assert "DTLS-SRTP complete" in baresip.log()
    stats = gw.relay.stats_now(gw.sid)
    assert stats.legs[0][0].packets_in > 50 and stats.legs[0][0].auth_failures == 0
    heard = ulaw_decode(bytes(phone.heard))
    assert tone_coverage(heard, BARESIP_TONE) > 0.6
    assert tone_coverage(read_samples(baresip.recording()), OUR_TONE) > 0.6


@pytest.fixture
async def parts(tmp_path: Path):
    keys = init_keys(tmp_path / "keys")
    identity = DtlsIdentity.from_files(keys.dtls_cert, keys.dtls_key)
    loop = asyncio.get_running_loop()
    base = min(free_port(GW, tcp=False), 65535 - 402) & ~1  # busy ports are skipped by the relay
    relay = MediaRelay(MediaSection(address=GW, port_min=base, port_max=base + 399))
    ua_t, ua = await loop.create_datagram_endpoint(MiniUa, local_addr=(GW, 0))
    ph_t, phone = await loop.create_datagram_endpoint(PlainPhone, local_addr=(GW, 0))
    yield relay, identity, ua, phone
    relay.close_now()
    ua_t.close()
    ph_t.close()


async def test_baresip_calls_us_and_we_answer_active(tmp_path: Path, procs: Procs,
                                                     parts: tuple) -> None:
    require_tool("baresip")
    relay, identity, ua, phone = parts
    baresip = MuxPhone("alice", workdir=tmp_path, address="127.0.0.2", tone_hz=BARESIP_TONE,
                        mediaenc="dtls_srtp")
    await asyncio.to_thread(baresip.start, procs, CALL_SECONDS + 4,
                            f"sip:gw@{GW}:{ua.port}")
    invite, src = await asyncio.wait_for(ua.requests.get(), 15.0)
    assert invite.method == "INVITE"
    gw = Gateway(relay, identity, phone)
    remote, fingerprints, params = gw.remote(invite.body)
    assert params.setup == "actpass"  # type: ignore[attr-defined]
    setup = answer_setup(params.setup)  # type: ignore[attr-defined]
    gw.start(role_for_setup(setup), remote, fingerprints)
    tag = secrets.token_hex(4)
    ua.respond(invite, 200, src, tag,
               our_sdp(gw.dtls_port, dtls_attributes(gw.leg.fingerprint, setup, gw.leg.tls_id),
                       feedback=params.feedback))  # type: ignore[attr-defined]
    event = await run_media(gw, phone)
    assert event.keys.suite == "AES_CM_128_HMAC_SHA1_80"  # the only profile baresip 1.0 offers
    assert event.cipher.startswith("ECDHE-RSA-")  # baresip serves with its RSA certificate
    bye, src = await asyncio.wait_for(ua.requests.get(), 15.0)
    while bye.method != "BYE":
        bye, src = await asyncio.wait_for(ua.requests.get(), 15.0)
    ua.respond(bye, 200, src, tag)
    await asyncio.to_thread(baresip.wait, 15.0)
    gw.leg.close()
    check_audio(gw, phone, baresip)


async def test_we_call_baresip_with_actpass(tmp_path: Path, procs: Procs, parts: tuple) -> None:
    require_tool("baresip")
    relay, identity, ua, phone = parts
    baresip = MuxPhone("bob", workdir=tmp_path, address="127.0.0.3", tone_hz=BARESIP_TONE,
                        mediaenc="dtls_srtp")
    await asyncio.to_thread(baresip.start, procs, CALL_SECONDS + 6)
    gw = Gateway(relay, identity, phone)
    offer = our_sdp(gw.dtls_port, dtls_attributes(gw.leg.fingerprint, "actpass", gw.leg.tls_id))
    call_id, tag, branch = secrets.token_hex(8), secrets.token_hex(4), secrets.token_hex(6)
    target = (baresip.address, baresip.port)
    ua.send(f"INVITE sip:bob@{baresip.address}:{baresip.port} SIP/2.0\n"
            f"Via: SIP/2.0/UDP {GW}:{ua.port};branch=z9hG4bK{branch};rport\n"
            "Max-Forwards: 70\n"
            f"From: <sip:gw@{GW}>;tag={tag}\n"
            f"To: <sip:bob@{baresip.address}>\n"
            f"Call-ID: {call_id}\n"
            "CSeq: 1 INVITE\n"
            f"Contact: <sip:gw@{GW}:{ua.port}>\n"
            "Content-Type: application/sdp\n", offer, target)
    answer = await ua.final_response()
    assert answer.status == 200, answer
    remote, fingerprints, params = gw.remote(answer.body)
    gw.start(role_from_answer(params.setup), remote, fingerprints)  # type: ignore[attr-defined]
    to = answer.headers.get("To")
    ack_branch = secrets.token_hex(6)
    dialog = (f"Via: SIP/2.0/UDP {GW}:{ua.port};branch=z9hG4bK{{b}};rport\n"
              "Max-Forwards: 70\n"
              f"From: <sip:gw@{GW}>;tag={tag}\n"
              f"To: {to}\n"
              f"Call-ID: {call_id}\n")
    ua.send(f"ACK sip:bob@{baresip.address}:{baresip.port} SIP/2.0\n"
            + dialog.format(b=ack_branch) + "CSeq: 1 ACK\n", b"", target)
    await run_media(gw, phone)
    ua.send(f"BYE sip:bob@{baresip.address}:{baresip.port} SIP/2.0\n"
            + dialog.format(b=secrets.token_hex(6)) + "CSeq: 2 BYE\n", b"", target)
    assert (await ua.final_response()).status == 200
    gw.leg.close()
    await asyncio.to_thread(baresip.wait, 15.0)
    check_audio(gw, phone, baresip)
