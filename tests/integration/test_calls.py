"""Calls through the running gateway (in-process ``Gateway``) between independent test phones.

A legacy PBX phone speaks SIP/UDP and plain RTP; a carrier phone speaks SIP/TLS (mutual TLS with
the dev CA) and SRTP with its own keys. Each test checks the SIP flow on both legs and that media
arrives decrypted on the secure side and plain on the legacy side, in both directions; after each
call the gateway must hold no call, no dialog and no media session.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config import Config, config_from_dict
from tests.support.certs import GATEWAY_NAME, client_context, make_test_pki, server_context
from tests.support.net import free_port
from tests.support.phone import answerer, apply_answer, plain_offer, sdes_offer
from tests.support.rtp import RtpEndpoint, pattern_payload
from tests.support.sdes import parse_media
from tests.support.sip_ua import SipTestUA

DOMAIN = "gateway.srtpgw.test"


def media_range() -> int:
    """A per-process slice of media ports, so parallel test runs do not compete."""
    return 20000 + (os.getpid() % 400) * 50


@dataclass
class Rig:
    gw: Gateway
    pbx: SipTestUA       # legacy, UDP, plain RTP
    carrier: SipTestUA   # secure, TLS, SRTP
    udp: tuple[str, int]
    tls: tuple[str, int]
    keys: Path

    async def endpoints(self) -> tuple[RtpEndpoint, RtpEndpoint]:
        return await RtpEndpoint.open(), await RtpEndpoint.open()

    def assert_clean(self) -> None:
        b = self.gw.b2bua
        assert b.calls == {}
        assert b._dialogs == {} and b._invites == {} and b._media == {}
        assert b._by_session == {} and b._unacked == {} and b._acks == {}
        assert self.gw.relay.totals().sessions_active == 0

    async def settle(self) -> None:
        """Let the gateway finish its BYEs and media closes."""
        for _ in range(100):
            if not self.gw.b2bua._tasks and self.gw.relay.totals().sessions_active == 0:
                return
            await asyncio.sleep(0.02)


def gateway_config(tmp: Path, keys: Path, pbx: SipTestUA, carrier: SipTestUA,
                   **overrides: Any) -> Config:
    start = media_range()
    pbx_trunk = {"name": "pbx", "side": "legacy", "listener": "udp", "transport": "udp",
                 "peer": f"127.0.0.1:{pbx.port}", "allowed_sources": ["127.0.0.1/32"],
                 "media": "rtp", "route_to": "carrier", "trusted": True}
    carrier_trunk = {"name": "carrier", "side": "secure", "listener": "tls", "transport": "tls",
                     "peer": f"127.0.0.1:{carrier.port}", "allowed_sources": ["127.0.0.1/32"],
                     "tls_identity": ["sip:peer.srtpgw.test"], "media": "srtp",
                     "suites": ["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"],
                     "route_to": "pbx"}
    pbx_trunk.update(overrides.pop("pbx", {}))
    carrier_trunk.update(overrides.pop("carrier", {}))
    raw = {
        "gateway": {"user_agent": "srtpgw-test"},
        "tls": {"certificate": str(keys / "gateway.crt"), "private_key": str(keys / "gateway.key"),
                "ca_file": str(keys / "ca.crt")},
        "dtls": {"certificate": str(keys / "dtls.crt"), "private_key": str(keys / "dtls.key")},
        "media": {"address": "127.0.0.1", "port_min": start, "port_max": start + 49},
        "sip": {"t1": 0.1, "t2": 0.4, "t4": 0.5},
        "admin": {"enabled": False},
        "listener": [
            {"name": "udp", "transport": "udp", "address": "127.0.0.1",
             "port": free_port("udp")},
            {"name": "tls", "transport": "tls", "address": "127.0.0.1",
             "port": free_port("tcp"), "tls_client_auth": "require"},
        ],
        "trunk": [pbx_trunk, carrier_trunk],
    }
    raw.update(overrides)
    return config_from_dict(raw, file=str(tmp / "gw.toml"))


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    keys = make_test_pki(tmp_path / "keys").dir
    pbx = await SipTestUA.start("udp", user="pbx", domain="pbx.internal")
    carrier = await SipTestUA.start("tls", user="carrier", domain="carrier.internal",
                                    tls_server=server_context(keys, "peer"),
                                    tls_client=client_context(keys, "peer"),
                                    server_name=GATEWAY_NAME)
    overrides = getattr(request, "param", {})
    cfg = gateway_config(tmp_path, keys, pbx, carrier, **overrides)
    gw = Gateway(cfg)
    await gw.start()
    rig = Rig(gw, pbx, carrier, gw.stack.bound("udp"), gw.stack.bound("tls"), keys)
    try:
        yield rig
    finally:
        await gw.stop()
        await pbx.close()
        await carrier.close()


async def media_both_ways(a: RtpEndpoint, b: RtpEndpoint, count: int = 20) -> None:
    """``count`` packets each way arrive intact (decrypted where keyed)."""
    a.clear()
    b.clear()
    await asyncio.gather(a.send_stream(count, 0.002, payload=pattern_payload),
                         b.send_stream(count, 0.002, payload=pattern_payload))
    await asyncio.gather(a.wait_for_packets(count), b.wait_for_packets(count))
    assert a.pattern_indices()[:count] == list(range(count))
    assert b.pattern_indices()[:count] == list(range(count))
    assert a.auth_failures == b.auth_failures == 0


async def test_legacy_calls_secure_rtp_to_srtp(rig: Rig) -> None:
    pbx_ep, car_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(car_ep)
    call = await rig.pbx.invite(f"sip:4930123@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
    final = await call.wait_final(5)
    assert final.status == 200
    media = apply_answer(pbx_ep, final.body)
    assert media.proto == "RTP/AVP" and not media.cryptos
    incoming = await rig.carrier.wait_call(2)
    assert incoming.invite is not None and incoming.invite.uri.startswith("sip:4930123@")
    offered = parse_media(incoming.invite.body)[0]
    assert offered.proto == "RTP/SAVP"
    assert [k.suite for _, k in offered.cryptos] == ["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"]
    assert car_ep.rx_key is not None and car_ep.rx_key.suite == "AEAD_AES_256_GCM"
    await incoming.wait_ack(2)
    assert len(rig.gw.calls) == 1
    await media_both_ways(pbx_ep, car_ep)
    assert (await call.bye(3)).status == 200
    await incoming.wait_request("BYE", 3)
    await rig.settle()
    rig.assert_clean()


async def test_secure_calls_legacy_srtp_to_rtp(rig: Rig) -> None:
    pbx_ep, car_ep = await rig.endpoints()
    rig.pbx.uas.answer = answerer(pbx_ep)
    offer, keys = sdes_offer(car_ep, ("AES_CM_128_HMAC_SHA1_80",))
    call = await rig.carrier.invite(f"sip:200@{DOMAIN}", rig.tls, offer)
    final = await call.wait_final(5)
    assert final.status == 200
    media = apply_answer(car_ep, final.body, keys)
    assert media.proto == "RTP/SAVP" and media.cryptos[0][1].suite == "AES_CM_128_HMAC_SHA1_80"
    incoming = await rig.pbx.wait_call(2)
    plain = parse_media(incoming.invite.body)[0]
    assert plain.proto == "RTP/AVP" and not plain.cryptos
    await media_both_ways(car_ep, pbx_ep)
    # the callee hangs up this time
    assert (await incoming.bye(3)).status == 200
    await call.wait_request("BYE", 3)
    await rig.settle()
    rig.assert_clean()
