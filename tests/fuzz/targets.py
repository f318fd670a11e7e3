"""Fuzz targets: one function per input format, each checking what must hold for any octets.

A target raises (AssertionError, or whatever escapes the code under test) only on a defect; every
refusal the layer is meant to give (SipParseError, SdpError, an error reply) is accepted. The same
targets run under atheris (``tests/fuzz/atheris_main.py``, coverage-guided), replay the regression
inputs in ``tests/corpus/<target>/`` and seed from the tests' own messages plus, for SIP, the RFC
4475 vectors read in place from ``../shared/rfc4475``.

Targets are built lazily (``build(name)``): some hold a relay, an event loop or DTLS identities,
made once per process so that each input costs microseconds, not a handshake.
"""

from __future__ import annotations

import asyncio
import json
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import RFC4475_DIR

Run = Callable[[bytes], None]


@dataclass(frozen=True)
class Target:
    name: str
    run: Run
    seeds: list[bytes]
    seed_dirs: list[Path] = field(default_factory=list)  # read in place, never written
    max_len: int = 4096
    close: Callable[[], None] = lambda: None


# --------------------------------------------------------------------------- SIP

_SIP_SEEDS = [
    b"INVITE sip:100@gateway.srtpgw.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport\r\nMax-Forwards: 70\r\n"
    b"From: \"A \\\"q\\\"\" <sip:alice@pbx.example.test>;tag=f1\r\n"
    b"To: <sip:100@gateway.srtpgw.test>\r\nCall-ID: seed-1@pbx.example.test\r\n"
    b"CSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>;expires=3\r\n"
    b"Route: <sip:p1;lr>, <sips:[2001:db8::1]:5061;lr>\r\nSupported: timer, 100rel\r\n"
    b"Session-Expires: 1800;refresher=uac\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n\r\nv=0\r\n",
    b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TLS gw:5061;branch=z9hG4bKabc\r\n"
    b"f: <tel:+1-555;phone-context=x>;tag=9\r\nt: <sip:b@h>;tag=2\r\ni: c\r\n"
    b"CSeq: 7 INVITE\r\nRecord-Route: <sip:gw;lr>\r\nl: 0\r\n\r\n",
    b"BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nv: SIP/2.0/TCP [::1]:5060;branch=z9hG4bK2\r\n"
    b"From: <sip:b@h>;tag=2\r\nTo: <sip:a@h>;tag=1\r\nCall-ID: c\r\nCSeq: 8 BYE\r\n"
    b"Reason: SIP;cause=200;text=\"x\"\r\nContent-Length: 0\r\n\r\n",
    b"REGISTER sip:registrar.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK3\r\n"
    b"From: <sip:u@registrar.test>;tag=3\r\nTo: <sip:u@registrar.test>\r\nCall-ID: r\r\n"
    b"CSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\n"
    b"Authorization: Digest username=\"u\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", "
    b"response=\"0123456789abcdef0123456789abcdef\", algorithm=SHA-256\r\n"
    b"Content-Length: 0\r\n\r\n",
]


def _sip() -> Target:
    from gateway.sip.errors import SipParseError
    from gateway.sip.framing import Keepalive, StreamFramer
    from gateway.sip.message import ParseLimits, SipRequest, error_response, parse_message

    limits = ParseLimits()
    roomy = ParseLimits(max_message_size=1 << 20, max_headers=1 << 12, max_header_line=1 << 18,
                        max_uri_length=1 << 18)

    def check(data: bytes, stream: bool) -> None:
        try:
            msg = parse_message(data, limits, stream=stream)
        except SipParseError as exc:
            assert 400 <= exc.status <= 599, exc.status
            error_response(data, exc.status, "t")  # answering a bad message must not fail
            return
        wire = msg.to_bytes()
        again = parse_message(wire, roomy, stream=True)
        assert type(again) is type(msg)
        assert again.start_line() == msg.start_line()
        assert again.body == msg.body
        assert [h for h in again.headers if h[0] != "Content-Length"] == \
            [h for h in msg.headers if h[0] != "Content-Length"]
        assert again.to_bytes() == wire  # serialization is a fixed point after one pass
        assert again.via == msg.via and again.cseq == msg.cseq and again.call_id == msg.call_id
        assert again.from_ == msg.from_ and again.to == msg.to
        assert again.contact == msg.contact and again.route == msg.route
        assert again.record_route == msg.record_route and again.max_forwards == msg.max_forwards
        if isinstance(msg, SipRequest):
            assert isinstance(again, SipRequest) and again.uri == msg.uri

    def run(data: bytes) -> None:
        check(data, stream=False)
        # The same octets as a stream, cut in two at a point the input chooses.
        cut = data[0] % (len(data) + 1) if data else 0
        framer = StreamFramer(limits, 1 << 16)
        try:
            for part in (data[:cut], data[cut:]):
                for item in framer.feed(part):
                    if not isinstance(item, Keepalive):
                        check(item, stream=True)
        except SipParseError as exc:
            assert exc.status in (400, 413), exc.status

    dirs = [RFC4475_DIR] if RFC4475_DIR.is_dir() else []
    return Target("sip", run, list(_SIP_SEEDS), dirs, max_len=8192)


# --------------------------------------------------------------------------- SDP


def _sdp() -> Target:
    from gateway.media.api import SrtpParams
    from gateway.sdp import SdpError, parse_sdp
    from gateway.sdp.offer_answer import (
        LegPolicy,
        OurStream,
        build_answer,
        build_offer,
        new_origin,
        offer_keys,
        read_answer,
        read_offer,
    )
    from tests.support import sdp_samples

    policies = [LegPolicy("rtp"), LegPolicy("srtp"), LegPolicy("srtp-optional"),
                LegPolicy("dtls-srtp"),
                LegPolicy("srtp", accept_unencrypted_srtcp=True, rtcp_mux=False)]
    keys = {p: offer_keys(p) for p in policies}
    origin = new_origin("127.0.0.1", "1")

    def fixed_key(suite: str) -> tuple[SrtpParams, ...]:
        from gateway.media.api import SUITE_KEY_LENGTHS

        return (SrtpParams(suite, bytes(sum(SUITE_KEY_LENGTHS[suite]))),)

    def stable(sdp: object) -> None:
        wire = sdp.to_bytes()  # type: ignore[attr-defined]
        assert parse_sdp(wire).to_bytes() == wire

    def run(data: bytes) -> None:
        try:
            sdp = parse_sdp(data)
        except SdpError as exc:
            assert exc.status == 400, exc.status
            return
        stable(sdp)
        for policy in policies:
            ours = build_offer(sdp, [OurStream(("127.0.0.1", 41000 + 2 * i), keys=keys[policy])
                                     for i in range(len(sdp.media))], policy, origin)
            stable(ours)
            try:
                read_answer(ours, data, policy)
            except SdpError as exc:
                assert exc.status in (400, 488), exc.status
            try:
                offer = read_offer(sdp, policy)
            except SdpError as exc:
                assert exc.status == 488, exc.status
                continue
            streams = [OurStream(("127.0.0.1", 42000 + 2 * i),
                                 keys=fixed_key(s.remote_key.suite) if s.remote_key else ())
                       if s.accepted else None for i, s in enumerate(offer.streams)]
            stable(build_answer(offer, sdp, streams, policy, origin))
            stable(build_answer(offer, None, streams, policy, origin))

    return Target("sdp", run, list(sdp_samples.ALL.values()), max_len=4096)


# --------------------------------------------------------------------------- RTP/RTCP/SRTP

SUITE = "AES_CM_128_HMAC_SHA1_80"
SRC = ("127.0.0.1", 4000)


class PythonMediaEngine:
    """The reference engine: two ``LegStream``s of one stream, fed through the relay's buffer.

    ``feed`` classifies a datagram the way the relay's receive loop does (RFC 7983 first byte,
    RFC 5761 payload type on a muxed port) and returns what would be sent on, or None with the
    drop counter that counted it. Another engine (the native path) implements the same
    ``feed``/``reset`` and ``tests/fuzz`` compares their outputs input by input.
    """

    name = "python"

    def __init__(self, mode: int) -> None:
        from gateway.media.api import LegConfig, SrtpParams
        from gateway.media.srtp import PacketBuffer
        from gateway.media.stream import LegStream

        keys = [SrtpParams(SUITE, bytes([i]) * 30) for i in range(4)]
        srtp_in, srtp_out = mode & 1, mode & 2
        self.cfg = (LegConfig(remote_rtp=SRC, rx=keys[0] if srtp_in else None,
                              tx=keys[1] if srtp_in else None, accept_plain_rtcp=True),
                    LegConfig(remote_rtp=("127.0.0.1", 5000), rx=keys[2] if srtp_out else None,
                              tx=keys[3] if srtp_out else None))
        self.keys = keys
        self._leg_type = LegStream
        self.buf = PacketBuffer()
        self.reset()

    def reset(self) -> None:
        legs = (self._leg_type(30000), self._leg_type(30002))
        legs[0].peer, legs[1].peer = legs[1], legs[0]
        legs[0].configure(self.cfg[0])
        legs[1].configure(self.cfg[1])
        self.legs = legs

    def close(self) -> None:
        for leg in self.legs:
            leg.close()

    def feed(self, packet: bytes, rtcp_port: bool = False) -> tuple[bytes | None, str]:
        from gateway.media.srtp import MAX_PACKET

        ep = self.legs[0]
        n = len(packet)
        if n > MAX_PACKET:
            return None, "drop_malformed"
        before = _drops(ep)
        self.buf.data[:n] = packet
        first = packet[0] if packet else 0
        if 127 < first < 192 and n >= 8:
            if rtcp_port or 191 < packet[1] < 224:
                m = ep.rtcp_in(self.buf, n, SRC)
            elif n >= 12:
                m = ep.rtp_in(self.buf, n, SRC)
            else:
                return None, "drop_malformed"
        elif 19 < first < 64:
            return None, "dtls"
        else:
            return None, "drop_malformed"  # STUN (0..3), ZRTP, TURN channels: not relayed
        if m:
            return bytes(self.buf.view[:m]), ""
        after = _drops(ep)
        changed = [k for k in after if after[k] != before[k]]
        return None, ",".join(changed)


def _drops(ep: object) -> dict[str, int]:
    """Every drop counter of the leg (whatever counters the engine has grown)."""
    return {k: getattr(ep, k) for k in type(ep).__slots__ if k.startswith("drop_")}


MEDIA_ENGINES: list[type] = [PythonMediaEngine]


def media_target(engine_types: list[type] | None = None) -> Target:
    """RTP/RTCP/SRTP through every engine in ``engine_types``; they must agree byte for byte."""
    from gateway.media.srtp import MAX_PACKET, SrtpContext, SrtpError

    # mode bit 0: SRTP on the receiving leg, bit 1: SRTP on the sending leg.
    types = engine_types or MEDIA_ENGINES
    engines = {mode: [cls(mode) for cls in types] for mode in range(4)}
    sender = {mode: engines[mode][0].keys for mode in range(4)}

    def run(data: bytes) -> None:
        if len(data) < 2:
            return
        ctl, packet = data[0], data[1:]
        mode, rtcp_port, seal = ctl & 3, bool(ctl & 4), bool(ctl & 8)
        keys = sender[mode]
        if seal and mode & 1:
            # Protect the input as the peer would, so unprotect gets past authentication and
            # the header parsing behind it (CSRCs, extensions, padding) sees the fuzzed octets.
            tx = SrtpContext(keys[0], outbound=True)
            try:
                is_rtcp = rtcp_port or (len(packet) > 1 and 191 < packet[1] < 224)
                packet = tx.protect(packet, rtcp=is_rtcp)
            except SrtpError:  # the peer could not have sent it either
                return
            finally:
                tx.close()
        results = []
        for engine in engines[mode]:
            engine.reset()
            out, why = engine.feed(packet, rtcp_port)
            assert (out is None) == bool(why), (out, why)
            if out is not None:
                assert len(out) <= MAX_PACKET + 148
                if mode & 2:
                    # What leg 1's peer receives must open with the key it was given, and carry
                    # the payload that came in.
                    rx = SrtpContext(keys[3], outbound=False)
                    try:
                        rtcp_out = rtcp_port or 191 < out[1] < 224
                        rx.unprotect(out, rtcp=rtcp_out)
                    finally:
                        rx.close()
            else:
                assert "," not in why, why  # one drop, one counter
            results.append((out, why))
        assert all(r == results[0] for r in results), [e.name for e in engines[mode]]

    rtp = struct.pack("!BBHII", 0x80, 0, 1, 160, 0xABCD) + b"\xd5" * 160
    rtcp_rr = struct.pack("!BBHI", 0x81, 201, 7, 0xABCD) + bytes(24)
    stun = struct.pack("!HHI", 0x0001, 8, 0x2112A442) + b"\x01" * 12 + \
        struct.pack("!HH", 0x0024, 4) + b"\x6e\x00\x01\xff"
    ext = struct.pack("!BBHII", 0x90, 0, 2, 160, 0xABCD) + b"\xbe\xde\x00\x01\x10\xaa\x00\x00" \
        + b"\xd5" * 20
    csrc = struct.pack("!BBHII", 0x82, 0x80 | 8, 3, 160, 0xABCD) + bytes(8) + b"\xd5" * 20
    seeds = [bytes([c]) + p for c in range(16) for p in (rtp, rtcp_rr, ext, csrc)]
    seeds += [b"\x00" + stun, b"\x04" + stun, b"\x00\x16\xfe\xfd" + bytes(10)]

    def close() -> None:
        for group in engines.values():
            for engine in group:
                engine.close()

    return Target("media", run, seeds, max_len=MAX_PACKET + 1, close=close)


# --------------------------------------------------------------------------- DTLS


def _dtls() -> Target:
    from gateway.media.dtls import DtlsSession
    from gateway.media.dtls_events import DtlsFailed
    from gateway.media.dtls_identity import DtlsIdentity
    from gateway.media.dtls_records import HEADER, is_dtls, pack_datagrams, split_records
    from gateway.ops.keys import make_self_signed

    server_id = DtlsIdentity(*reversed(make_self_signed("fuzz server")))
    client_id = DtlsIdentity(*reversed(make_self_signed("fuzz client")))

    def session(role: str) -> DtlsSession:
        other = client_id if role == "server" else server_id
        me = server_id if role == "server" else client_id
        return DtlsSession(me, role, remote_fingerprints=[("sha-256", other.fingerprint())],
                           handshake_timeout=5.0)

    def drain(s: DtlsSession) -> list[bytes]:
        out = s.datagrams_to_send()
        while (event := s.next_event()) is not None:
            if isinstance(event, DtlsFailed):
                assert event.reason, event
        assert s.state in ("new", "handshaking", "verifying", "connected", "failed", "closed")
        return out

    client_hello = session("client")
    client_hello.start(0.0)
    hello = client_hello.datagrams_to_send()
    server_flight_from = session("server")
    server_flight_from.receive_datagram(hello[0], 0.0)
    flight = server_flight_from.datagrams_to_send()

    def run(data: bytes) -> None:
        if not data:
            return
        ctl, datagram = data[0], data[1:]
        records = split_records(datagram)
        assert b"".join(records) == datagram
        assert all(len(r) >= HEADER for r in records[:-1])
        mtu = 64 + ctl * 8
        packed = pack_datagrams(records, mtu)
        assert b"".join(packed) == datagram
        assert all(len(d) <= mtu or len(split_records(d)) == 1 for d in packed)
        if not is_dtls(datagram):
            return  # the relay hands DTLS only what RFC 7983 calls DTLS
        if ctl & 1:  # the server meets a first datagram
            s = session("server")
        else:  # the client, having sent its ClientHello, meets the server's answer
            s = session("client")
            s.start(0.0)
        s.receive_datagram(datagram, 0.1)
        for d in drain(s):
            assert is_dtls(d), d[:1]
        s.handle_timer(10.0)  # past the handshake deadline: fails cleanly, never raises
        drain(s)
        s.close(10.0)
        drain(s)

    seeds = [b"\x01" + hello[0], *(b"\x00" + d for d in flight), b"\x01" + bytes(13)]
    return Target("dtls", run, seeds, max_len=4096)


# --------------------------------------------------------------------------- relay control


class _ControlHarness:
    """A real MediaRelay behind a ControlServer, on a private loop; the relay's client side
    reads the same lines from a StreamReader."""

    def __init__(self) -> None:
        from gateway.config import MediaSection
        from gateway.media.control import ControlServer
        from gateway.media.relay import MediaRelay

        self.loop = asyncio.new_event_loop()
        section = MediaSection(address="127.0.0.1", port_min=47600, port_max=47663)
        self.relay = MediaRelay(section, loop=self.loop)
        self.server = ControlServer(self.relay, str(Path(tempfile.gettempdir()) / "fuzz.ctl"))

    def reset(self) -> None:
        for sid in self.relay.session_ids():
            self.relay.close_session_now(sid)


def _control() -> Target:
    from gateway.media.api import MediaError
    from gateway.media.control import RelayClient

    harness = _ControlHarness()
    loop = harness.loop

    async def serve(lines: list[bytes]) -> None:
        for line in lines:
            ids = harness.relay.session_ids()  # "@S" names the newest session (ids are random)
            if ids:
                line = line.replace(b"@S", ids[-1].encode())
            reply = await harness.server.handle(line)
            assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
            json.loads(json.dumps(reply))  # what goes back on the wire is JSON

    async def client_reads(data: bytes) -> None:
        reader = asyncio.StreamReader(limit=1 << 16)
        reader.feed_data(data)
        reader.feed_eof()
        client = RelayClient(reader, None, None)  # type: ignore[arg-type]
        fut = loop.create_future()
        client._pending[1] = fut
        await client._task  # a malformed line ends the reader quietly, failing what waits
        assert fut.done()
        if fut.exception() is not None:
            assert isinstance(fut.exception(), MediaError)

    def run(data: bytes) -> None:
        lines = data.split(b"\n")[:8]
        try:
            loop.run_until_complete(serve(lines))
            loop.run_until_complete(client_reads(data))
        finally:
            harness.reset()

    seeds = [
        b'{"id": 1, "op": "ping"}',
        b'{"id": 2, "op": "create_session", "streams": 2, "rtcp_mux": [true, false], '
        b'"timeout": 30}\n{"id": 3, "op": "totals"}',
        b'{"id": 4, "op": "create_sessions", "count": 3}',
        b'{"id": 9, "op": "create_session"}\n'
        b'{"id": 5, "op": "update_leg", "session_id": "@S", "leg": 1, "stream": 0, '
        b'"config": {"remote_rtp": ["127.0.0.1", 4000], "rtcp_mux": true, "rx": {"suite": '
        b'"AES_CM_128_HMAC_SHA1_80", "key": "' + b"A" * 40 + b'"}, "tx": {"suite": '
        b'"AES_CM_128_HMAC_SHA1_80", "key": "' + b"A" * 40 + b'"}}}',
        b'{"id": 9, "op": "create_session"}\n{"id": 6, "op": "stats", "session_id": "@S"}\n'
        b'{"id": 7, "op": "close_session", '
        b'"session_id": "@S"}\n{"id": 8, "op": "drop_rx", "session_id": "x", "leg": 0}',
        b'{"id": 1, "ok": true, "result": null}\n{"event": "totals", "created": 1}\n'
        b'{"event": "timeout", "session_id": "s", "stream": 0}',
    ]
    def close() -> None:
        harness.relay.close_now()
        loop.close()

    return Target("control", run, seeds, max_len=2048, close=close)


BUILDERS: dict[str, Callable[[], Target]] = {
    "sip": _sip, "sdp": _sdp, "media": media_target, "dtls": _dtls, "control": _control,
}
NAMES = list(BUILDERS)


def build(name: str) -> Target:
    return BUILDERS[name]()
