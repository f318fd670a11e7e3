"""Media attacks on a live call through the gateway (carrier SRTP <-> PBX plain RTP).

After a real call is set up by the independent test phones, a stranger injects on both legs,
tampered and replayed SRTP arrive from the carrier's own address, and SRTP under a guessed key
arrives from elsewhere: only the genuine packets reach the PBX, every attack is counted by the
relay, and SrtpWatch turns the counters into one security event without key material.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
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


def config(tmp: Path, keys: Path, pbx: SipTestUA, carrier: SipTestUA) -> Any:
    start = 47000 + (free_port("udp") % 50) * 20
    return config_from_dict({
        "tls": {"certificate": str(keys / "gateway.crt"), "private_key": str(keys / "gateway.key"),
                "ca_file": str(keys / "ca.crt")},
        "media": {"address": "127.0.0.1", "port_min": start, "port_max": start + 19},
        "admin": {"enabled": False},
        "listener": [
            {"name": "udp", "transport": "udp", "address": "127.0.0.1", "port": free_port("udp")},
            {"name": "tls", "transport": "tls", "address": "127.0.0.1",
             "port": free_port("tcp"), "tls_client_auth": "require"}],
        "trunk": [
            {"name": "pbx", "side": "legacy", "listener": "udp", "transport": "udp",
             "peer": f"127.0.0.1:{pbx.port}", "allowed_sources": ["127.0.0.1/32"],
             "media": "rtp", "route_to": "carrier"},
            {"name": "carrier", "side": "secure", "listener": "tls", "transport": "tls",
             "peer": f"127.0.0.1:{carrier.port}", "allowed_sources": ["127.0.0.1/32"],
             "tls_identity": ["sip:peer.srtpgw.test"], "media": "srtp", "suites": [SUITE],
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
