"""Calls through the running gateway (in-process ``Gateway``) between independent test phones.

A legacy PBX phone speaks SIP/UDP and plain RTP; a carrier phone speaks SIP/TLS (mutual TLS with
the dev CA) and SRTP with its own keys. Each test checks the SIP flow on both legs and that media
arrives decrypted on the secure side and plain on the legacy side, in both directions; after each
call the gateway must hold no call, no dialog and no media session.
"""

from __future__ import annotations

import asyncio
import os
import socket
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


def media_range(size: int = 50) -> int:
    """The even start of ``size`` consecutive UDP ports that are free right now, searched from
    a per-process offset so that parallel test runs do not compete for the same block."""
    base = 20000 + (os.getpid() % 400) * 50
    for offset in range(0, 20000, size):
        start = 20000 + (base - 20000 + offset) % 20000
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no {size} free consecutive UDP ports")


@dataclass
class Rig:
    gw: Gateway
    pbx: SipTestUA        # legacy, UDP, plain RTP
    pbx2: SipTestUA       # a second legacy PBX (rtp <-> rtp)
    carrier: SipTestUA    # secure, TLS, SRTP (AEAD_AES_256_GCM preferred)
    carrier2: SipTestUA   # a second secure peer (AES_CM_128_HMAC_SHA1_80 only)
    keys: Path

    def addr(self, listener: str) -> tuple[str, int]:
        return self.gw.stack.bound(listener)

    @property
    def udp(self) -> tuple[str, int]:
        return self.addr("udp")

    @property
    def tls(self) -> tuple[str, int]:
        return self.addr("tls")

    async def endpoints(self) -> tuple[RtpEndpoint, RtpEndpoint]:
        return await RtpEndpoint.open(), await RtpEndpoint.open()

    def assert_clean(self) -> None:
        b = self.gw.b2bua
        assert b.calls == {}
        assert b._dialogs == {} and b._invites == {} and b._media == {}
        assert b._by_session == {} and b._unacked == {} and b._acks == {}
        assert b._late_acks == set() and not b._tasks
        assert self.gw.relay.totals().sessions_active == 0

    async def settle(self) -> None:
        """Let the gateway finish its BYEs and media closes."""
        for _ in range(150):
            if not self.gw.b2bua._tasks and self.gw.relay.totals().sessions_active == 0:
                return
            await asyncio.sleep(0.02)


def gateway_config(tmp: Path, keys: Path, uas: dict[str, SipTestUA],
                   **overrides: Any) -> Config:
    """Four trunks, each on its own listener. From the PBX, R-URI users starting with 9 go to
    the second PBX and with 8 to the second carrier; from the carrier, 7 goes to the second
    carrier; everything else crosses legacy <-> secure. ``media_ports`` sizes the relay's
    port range (default 50), ``pbx2_transport`` the second PBX's transport (default udp)."""
    size = overrides.pop("media_ports", 50)
    pbx2_transport = overrides.pop("pbx2_transport", "udp")
    start = media_range(size)

    def legacy(name: str, listener: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "side": "legacy", "listener": listener, "transport": "udp",
                "peer": f"127.0.0.1:{uas[name].port}", "allowed_sources": ["127.0.0.1/32"],
                "media": "rtp", **kw}

    def secure(name: str, listener: str, suites: list[str], **kw: Any) -> dict[str, Any]:
        return {"name": name, "side": "secure", "listener": listener, "transport": "tls",
                "peer": f"{uas[name].host}:{uas[name].port}", "allowed_sources": ["127.0.0.0/8"],
                "tls_identity": ["sip:peer.srtpgw.test"], "media": "srtp", "suites": suites,
                **kw}

    trunks = {
        "pbx": legacy("pbx", "udp", route_to="carrier", trusted=True,
                      route=[{"prefix": "9", "strip": 1, "to": "pbx2"},
                             {"prefix": "8", "strip": 1, "to": "carrier2"}]),
        "pbx2": legacy("pbx2", "udp2", route_to="pbx", transport=pbx2_transport),
        "carrier": secure("carrier", "tls", ["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"],
                          route_to="pbx", route=[{"prefix": "7", "strip": 1, "to": "carrier2"}]),
        "carrier2": secure("carrier2", "tls2", ["AES_CM_128_HMAC_SHA1_80"], route_to="carrier"),
    }
    for name, extra in overrides.pop("trunks", {}).items():
        for key, value in extra.items():   # None removes a key
            if value is None:
                trunks[name].pop(key, None)
            else:
                trunks[name][key] = value

    def listener(name: str, transport: str) -> dict[str, Any]:
        li = {"name": name, "transport": transport, "address": "127.0.0.1",
              "port": free_port("udp" if transport == "udp" else "tcp")}
        if transport == "tls":
            li["tls_client_auth"] = "require"
        return li

    raw: dict[str, Any] = {
        "gateway": {"user_agent": "srtpgw-test"},
        "tls": {"certificate": str(keys / "gateway.crt"), "private_key": str(keys / "gateway.key"),
                "ca_file": str(keys / "ca.crt")},
        "dtls": {"certificate": str(keys / "dtls.crt"), "private_key": str(keys / "dtls.key")},
        "media": {"address": "127.0.0.1", "port_min": start, "port_max": start + size - 1},
        "sip": {"t1": 0.1, "t2": 0.4, "t4": 0.5},
        "admin": {"enabled": False},
        "listener": [listener("udp", "udp"), listener("udp2", pbx2_transport),
                     listener("tls", "tls"), listener("tls2", "tls")],
        "trunk": list(trunks.values()),
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config_from_dict(raw, file=str(tmp / "gw.toml"))


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    keys = make_test_pki(tmp_path / "keys").dir
    params = dict(getattr(request, "param", {}))
    pbx2_transport = params.get("pbx2_transport", "udp")
    uas = {
        "pbx": await SipTestUA.start("udp", user="pbx", domain="pbx.internal"),
        "pbx2": await SipTestUA.start(pbx2_transport, user="pbx2", domain="pbx2.internal"),
    }
    # Both carriers present the same certificate; distinct addresses keep the stack's
    # connection reuse (RFC 5923: same address and identity) from mixing them up.
    for name, host in (("carrier", "127.0.0.1"), ("carrier2", "127.0.0.2")):
        uas[name] = await SipTestUA.start("tls", host, user=name, domain=f"{name}.internal",
                                          tls_server=server_context(keys, "peer"),
                                          tls_client=client_context(keys, "peer"),
                                          server_name=GATEWAY_NAME)
    cfg = gateway_config(tmp_path, keys, uas, **params)
    gw = Gateway(cfg)
    await gw.start()
    try:
        yield Rig(gw, uas["pbx"], uas["pbx2"], uas["carrier"], uas["carrier2"], keys)
    finally:
        await gw.stop()
        for ua in uas.values():
            await ua.close()


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


async def establish(rig: Rig, caller: SipTestUA, callee: SipTestUA, ruri_user: str,
                    at: tuple[str, int], suites: tuple[str, ...] | None = None):
    """A call from ``caller`` to ``callee`` with media endpoints; returns both dialogs and
    endpoints (caller's first). ``suites``: the caller offers SDES with these."""
    a_ep, b_ep = await rig.endpoints()
    callee.uas.answer = answerer(b_ep)
    caller.uas.answer = answerer(a_ep)
    keys = None
    if suites:
        offer, keys = sdes_offer(a_ep, suites)
    else:
        offer = plain_offer(a_ep)
    call = await caller.invite(f"sip:{ruri_user}@{DOMAIN}", at, offer)
    final = await call.wait_final(5)
    assert final.status == 200, final
    apply_answer(a_ep, final.body, keys)
    incoming = await callee.wait_call(2)
    await incoming.wait_ack(2)
    return call, incoming, a_ep, b_ep


async def test_srtp_to_srtp_independent_keys_different_suites(rig: Rig) -> None:
    call, incoming, a_ep, b_ep = await establish(rig, rig.carrier, rig.carrier2, "7100",
                                                 rig.tls, ("AEAD_AES_256_GCM",))
    assert incoming.invite.uri.startswith("sip:100@")   # prefix 7 stripped
    assert a_ep.tx_key.suite == "AEAD_AES_256_GCM"
    assert b_ep.rx_key.suite == "AES_CM_128_HMAC_SHA1_80"
    assert b_ep.rx_key.key not in (a_ep.tx_key.key, a_ep.rx_key.key)
    await media_both_ways(a_ep, b_ep)
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


async def test_rtp_to_rtp(rig: Rig) -> None:
    call, incoming, a_ep, b_ep = await establish(rig, rig.pbx, rig.pbx2, "9555", rig.udp)
    assert call.state == "confirmed"
    assert incoming.invite.uri.startswith("sip:555@")
    assert b"crypto" not in incoming.invite.body
    await media_both_ways(a_ep, b_ep)
    await incoming.bye(3)
    await rig.settle()
    rig.assert_clean()


async def test_hold_resume_rekey_and_address_change(rig: Rig) -> None:
    call, incoming, pbx_ep, car_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    await media_both_ways(pbx_ep, car_ep)

    held = await call.reinvite(plain_offer(pbx_ep, direction="sendonly"))
    assert held.status == 200 and "a=recvonly" in held.sdp
    reoffer = await incoming.wait_request("INVITE", 2, count=1)
    assert "a=sendonly" in reoffer.sdp and "RTP/SAVP" in reoffer.sdp
    resumed = await call.reinvite(plain_offer(pbx_ep))
    assert resumed.status == 200 and "recvonly" not in resumed.sdp
    await media_both_ways(pbx_ep, car_ep)

    # the secure side re-keys (new key, same address), then moves to a new address and SSRC
    offer, keys = sdes_offer(car_ep, ("AEAD_AES_256_GCM",))
    rekeyed = await incoming.reinvite(offer)
    assert rekeyed.status == 200
    apply_answer(car_ep, rekeyed.body, keys)
    await media_both_ways(pbx_ep, car_ep)

    moved = await RtpEndpoint.open()
    offer, keys = sdes_offer(moved, ("AES_CM_128_HMAC_SHA1_80",))
    resp = await incoming.reinvite(offer)
    assert resp.status == 200
    apply_answer(moved, resp.body, keys)
    await media_both_ways(pbx_ep, moved)
    moved.close()
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()



@pytest.mark.parametrize("rig", [{"trunks": {"carrier": {"media": "srtp-optional",
                                                         "side": "legacy"}}}],
                         indirect=True)
async def test_srtp_optional_falls_back_to_plain_when_the_peer_declines(rig: Rig) -> None:
    pbx_ep, car_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(car_ep, suites=())   # this carrier phone has no SRTP
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
    final = await call.wait_final(5)
    assert final.status == 200
    apply_answer(pbx_ep, final.body)
    offered = parse_media((await rig.carrier.wait_call(2)).invite.body)[0]
    assert offered.proto == "RTP/AVP" and offered.cryptos     # best effort: SDES on AVP
    assert car_ep.rx_key is None
    await media_both_ways(pbx_ep, car_ep)
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("rig", [{"pbx2_transport": "tcp"}], indirect=True)
async def test_rtp_to_rtp_over_tcp_both_directions(rig: Rig) -> None:
    call, incoming, a_ep, b_ep = await establish(rig, rig.pbx, rig.pbx2, "9555", rig.udp)
    await media_both_ways(a_ep, b_ep)
    await incoming.bye(3)
    await call.wait_request("BYE", 2)
    call, incoming, a_ep, b_ep = await establish(rig, rig.pbx2, rig.pbx, "556",
                                                 rig.addr("udp2"))
    await media_both_ways(a_ep, b_ep)
    await call.bye(3)
    await rig.settle()
    rig.assert_clean()
