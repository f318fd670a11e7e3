"""Media attacks on a live call through the gateway (carrier SRTP <-> PBX plain RTP).

After a real call is set up by the independent test phones, a stranger injects on both legs,
tampered and replayed SRTP arrive from the carrier's own address, and SRTP under a guessed key
arrives from elsewhere: only the genuine packets reach the PBX, every attack is counted by the
relay, and SrtpWatch turns the counters into one security event without key material, naming
the source that failed. On the plain leg: a repeated SSRC+sequence number from the PBX's own
address is never encrypted twice under one index (RFC 3711 §9.1), and RTP bleed (RFC 7362 §4)
from another address or another port of the PBX's address never takes the latch.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pylibsrtp

from gateway.config import config_from_dict
from gateway.ops.keys import init_keys
from gateway.policy.events import attach_siem, detach_siem
from gateway.policy.media import SrtpWatch
from tests.security.harness import needs_app
from tests.support.certs import GATEWAY_NAME, client_context, server_context
from tests.support.net import free_port
from tests.support.phone import answerer, apply_answer, sdes_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sdes import SdesKey, parse_media
from tests.support.sip_ua import SipTestUA

SUITE = "AES_CM_128_HMAC_SHA1_80"


def config(tmp: Path, keys: Path, pbx: SipTestUA, carrier: SipTestUA,
           nat_learning: bool = False, suite: str = SUITE) -> Any:
    start = 47000 + (free_port("udp") % 50) * 20
    return config_from_dict({
        "tls": {"certificate": str(keys / "gateway.crt"), "private_key": str(keys / "gateway.key"),
                "ca_file": str(keys / "ca.crt")},
        "media": {"address": "127.0.0.1", "port_min": start, "port_max": start + 19,
                  "nat_relatch_after": 0.5},
        "admin": {"enabled": False},
        "listener": [
            {"name": "udp", "transport": "udp", "address": "127.0.0.1", "port": free_port("udp")},
            {"name": "tls", "transport": "tls", "address": "127.0.0.1",
             "port": free_port("tcp"), "tls_client_auth": "require"}],
        "trunk": [
            {"name": "pbx", "side": "legacy", "listener": "udp", "transport": "udp",
             "peer": f"127.0.0.1:{pbx.port}", "allowed_sources": ["127.0.0.1/32"],
             "media": "rtp", "route_to": "carrier", "nat_learning": nat_learning},
            {"name": "carrier", "side": "secure", "listener": "tls", "transport": "tls",
             "peer": f"127.0.0.1:{carrier.port}", "allowed_sources": ["127.0.0.1/32"],
             "tls_identity": ["sip:peer.srtpgw.test"], "media": "srtp", "suites": [suite],
             "route_to": "pbx"}],
    }, file=str(tmp / "gw.toml"))


def outbound(key: SdesKey) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=key.profile)
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


async def test_attacks_on_a_live_call(tmp_path: Path) -> None:
    needs_app()
    from gateway.app import Gateway

    keys = init_keys(tmp_path / "keys").dir
    pbx = await SipTestUA.start("udp", "127.0.0.1", user="pbx")
    carrier = await SipTestUA.start("tls", "127.0.0.1", user="carrier",
                                    tls_server=server_context(keys, "peer"),
                                    tls_client=client_context(keys, "peer"),
                                    server_name=GATEWAY_NAME)
    pbx_ep, car_ep = await RtpEndpoint.open(), await RtpEndpoint.open()
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.3", 0))
    gw = Gateway(config(tmp_path, keys, pbx, carrier))
    await gw.start()
    try:
        pbx.uas.answer = answerer(pbx_ep)
        offer, offered = sdes_offer(car_ep, (SUITE,))
        call = await carrier.invite("sip:200@gateway.srtpgw.test", gw.stack.bound("tls"), offer)
        final = await call.wait_final(5)
        assert final.status == 200
        apply_answer(car_ep, final.body, offered)
        incoming = await pbx.wait_call(2)
        srtp_leg = parse_media(final.body)[0]
        plain_leg = parse_media(incoming.invite.body)[0]

        for _ in range(5):
            genuine = car_ep.send()
        await pbx_ep.wait_for_packets(5, 3)

        assert car_ep.tx_key is not None
        fresh = outbound(car_ep.tx_key)
        for _ in range(20):  # tampered: valid packets with one payload bit flipped
            wire = bytearray(fresh.protect(car_ep.build_packet(b"\x55" * 160)))
            wire[30] ^= 0x01
            car_ep.send_raw(bytes(wire))
        for _ in range(30):  # replayed: the last genuine packet again
            car_ep.send_raw(genuine)
        guessed = outbound(SdesKey.generate(SUITE))
        for _ in range(10):  # a stranger on both legs
            stranger.sendto(guessed.protect(car_ep.build_packet(b"\x66" * 160)),
                            (srtp_leg.address, srtp_leg.port))
            stranger.sendto(pbx_ep.build_packet(b"\x77" * 160),
                            (plain_leg.address, plain_leg.port))
        await asyncio.sleep(0.5)

        assert len(pbx_ep.received) == 5 and car_ep.received == []
        [session] = gw.relay.session_ids()
        stats = await gw.relay.stats(session)
        assert stats.auth_failures == 30 and stats.replays == 30
        assert stats.legs[0][0].latched_rtp == car_ep.addr
        drops = gw.relay.totals().drops
        assert drops.get("source", 0) == 10

        buf = io.StringIO()
        h = attach_siem(stream=buf)
        try:
            watch = SrtpWatch(gw.config.firewall.srtp_auth_failure_threshold)
            assert watch.report_session("call-under-attack", ("carrier", "pbx"), stats) == 1
        finally:
            detach_siem(h)
        event = json.loads(buf.getvalue())
        assert event["kind"] == "srtp.auth_failures" and event["trunk"] == "carrier"
        # the stranger's forged packets failed last: the event names it, not the carrier
        assert event["source"] == "{}:{}".format(*stranger.getsockname())
        assert event["auth_failures"] + event["replays"] == 60
        assert car_ep.tx_key.key.hex() not in buf.getvalue()
        assert (await call.bye(3)).status == 200
    finally:
        stranger.close()
        await gw.stop()
        await pbx.close()
        await carrier.close()
        pbx_ep.close()
        car_ep.close()


@dataclass
class LiveCall:
    gw: Any
    pbx_ep: RtpEndpoint
    car_ep: RtpEndpoint
    plain_leg: tuple[str, int]  # the relay's address the PBX sends its RTP to


@contextlib.asynccontextmanager
async def live_call(tmp: Path, nat_learning: bool = False) -> AsyncIterator[LiveCall]:
    """A carrier (TLS, SRTP) -> PBX (UDP, plain RTP) call through a running gateway."""
    needs_app()
    from gateway.app import Gateway

    keys = init_keys(tmp / "keys").dir
    pbx = await SipTestUA.start("udp", "127.0.0.1", user="pbx")
    carrier = await SipTestUA.start("tls", "127.0.0.1", user="carrier",
                                    tls_server=server_context(keys, "peer"),
                                    tls_client=client_context(keys, "peer"),
                                    server_name=GATEWAY_NAME)
    pbx_ep, car_ep = await RtpEndpoint.open(), await RtpEndpoint.open()
    gw = Gateway(config(tmp, keys, pbx, carrier, nat_learning, "AEAD_AES_256_GCM"))
    await gw.start()
    try:
        pbx.uas.answer = answerer(pbx_ep)
        offer, offered = sdes_offer(car_ep, ("AEAD_AES_256_GCM",))
        call = await carrier.invite("sip:200@gateway.srtpgw.test", gw.stack.bound("tls"), offer)
        final = await call.wait_final(5)
        assert final.status == 200
        apply_answer(car_ep, final.body, offered)
        incoming = await pbx.wait_call(2)
        plain = parse_media(incoming.invite.body)[0]
        yield LiveCall(gw, pbx_ep, car_ep, (plain.address, plain.port))
        assert (await call.bye(3)).status == 200
    finally:
        await gw.stop()
        await pbx.close()
        await carrier.close()
        pbx_ep.close()
        car_ep.close()


async def plain_drops(c: LiveCall) -> dict[str, int]:
    [session] = c.gw.relay.session_ids()
    return (await c.gw.relay.stats(session)).legs[1][0].drops


async def test_repeated_plain_index_is_encrypted_once(tmp_path: Path) -> None:
    """Two plain packets from the PBX's address with one SSRC+seq and different payloads: one
    leaves on the SRTP leg (else C1 xor C2 = P1 xor P2 under AES-GCM); the other is counted."""
    async with live_call(tmp_path) as c:
        c.pbx_ep.send(b"\x01" * 160)
        await c.car_ep.wait_for_packets(1, 3)
        first = c.pbx_ep.build_packet(b"\x02" * 160)
        c.pbx_ep.send_raw(first)
        c.pbx_ep.send_raw(first[:12] + b"\x03" * 160)  # same SSRC and seq, other payload
        c.pbx_ep.send_raw(first[:12] + b"\x02" * 160)  # and the very same packet again
        await asyncio.sleep(0.4)
        arrived = len(c.car_ep.received) + c.car_ep.replays + c.car_ep.auth_failures
        assert arrived == 2 and c.car_ep.replays == 0
        assert [p.payload for p in c.car_ep.received] == [b"\x01" * 160, b"\x02" * 160]
        assert (await plain_drops(c))["repeat_index"] == 2
        assert c.gw.relay.totals().drops["repeat_index"] == 2


async def test_rtp_bleed_from_another_address_or_port_never_latches(tmp_path: Path) -> None:
    """RFC 7362 §4: without nat_learning only the PBX's signalled address and port is heard,
    before its first packet and after; every other source is a counted source drop."""
    attackers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    attackers[0].bind(("127.0.0.2", 0))
    attackers[1].bind(("127.0.0.1", 0))  # the PBX's own IP, another port
    try:
        async with live_call(tmp_path) as c:
            evil = c.pbx_ep.build_packet(b"\x66" * 160)
            for a in attackers:  # before the PBX spoke
                for _ in range(5):
                    a.sendto(evil, c.plain_leg)
            await asyncio.sleep(0.2)
            for _ in range(20):
                c.car_ep.send()
            await c.pbx_ep.wait_for_packets(20, 3)
            for i in range(40):  # the PBX and the attackers, interleaved, after latching
                c.pbx_ep.send(b"\x01" * 160)
                for a in attackers:
                    a.sendto(c.pbx_ep.build_packet(b"\x66" * 160), c.plain_leg)
                if i % 10 == 0:
                    c.car_ep.send()
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.4)
            assert all(p.payload == b"\x01" * 160 for p in c.car_ep.received)
            assert len(c.car_ep.received) == 40
            for a in attackers:  # the carrier's media went to the PBX only, never to them
                a.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    raise AssertionError(f"attacker {a.getsockname()} got {a.recv(2048)!r}")
            assert len(c.pbx_ep.received) == 24
            assert (await plain_drops(c))["source"] == 10 + 80
    finally:
        for a in attackers:
            a.close()


async def test_nat_learning_moves_only_after_the_latched_source_is_silent(tmp_path: Path) -> None:
    """With nat_learning the first source latches; a second one is refused while the first keeps
    sending and takes over only after [media] nat_relatch_after (0.5 s here) of its silence."""
    other = await RtpEndpoint.open("127.0.0.2")
    try:
        async with live_call(tmp_path, nat_learning=True) as c:
            c.pbx_ep.send(b"\x01" * 160)
            await c.car_ep.wait_for_packets(1, 3)
            for _ in range(30):  # 0.6 s of both sending: the latch stays
                c.pbx_ep.send(b"\x01" * 160)
                other.send_raw(other.build_packet(b"\x02" * 160), c.plain_leg)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            assert {p.payload for p in c.car_ep.received} == {b"\x01" * 160}
            assert (await plain_drops(c))["source"] == 30
            for _ in range(50):  # the latched source went quiet: after 0.5 s the other one latches
                other.send_raw(other.build_packet(b"\x02" * 160), c.plain_leg)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            moved = [p for p in c.car_ep.received if p.payload == b"\x02" * 160]
            refused = (await plain_drops(c))["source"] - 30
            assert len(moved) + refused == 50 and 1 <= refused <= 15  # ~0.3 s of the 0.5 s
            c.car_ep.send()
            await other.wait_for_packets(1, 3)  # the carrier's media follows the new latch
    finally:
        other.close()
