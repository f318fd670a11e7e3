"""The firewall as wired into the running gateway (in process, real sockets and certificates):
bans apply before the TLS handshake, failed handshakes count toward bans, SRTP failures on a
live call raise one security event, invented To-tags draw rate-limit tokens while a real
dialog's requests do not, and the rule-hit metric carries rule names only."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import config_from_dict
from gateway.ops.gateway_view import GatewayOps
from gateway.ops.keys import init_keys
from gateway.ops.metrics import StatsCollector
from gateway.policy.events import SECURITY_LOGGER, SiemHandler, attach_siem, detach_siem
from tests.security.corpus import SDP
from tests.security.harness import UdpClient, needs_app, request, status_of
from tests.support.certs import GATEWAY_NAME, client_context, server_context
from tests.support.net import free_port
from tests.support.phone import answerer, apply_answer, plain_offer, sdes_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sdes import SdesKey
from tests.support.sip_ua import SipTestUA

SUITE = "AES_CM_128_HMAC_SHA1_80"
DOMAIN = "gateway.srtpgw.test"


def config(tmp: Path, keys: Path, pbx_port: int, carrier_port: int, *, pike_max: int = 1000,
           threshold: int = 50, rate: int = 20, security_file: Path | None = None) -> Any:
    start = 46000 + (free_port("udp") % 50) * 20
    return config_from_dict({
        "logging": {"security_file": str(security_file)} if security_file else {},
        "tls": {"certificate": str(keys / "gateway.crt"), "private_key": str(keys / "gateway.key"),
                "ca_file": str(keys / "ca.crt")},
        "media": {"address": "127.0.0.1", "port_min": start, "port_max": start + 19},
        "admin": {"enabled": False},
        "firewall": {"srtp_auth_failure_threshold": threshold,
                     "pike": {"window": 10.0, "max_requests": pike_max, "ban_time": 60}},
        "listener": [
            {"name": "udp", "transport": "udp", "address": "127.0.0.1", "port": free_port("udp")},
            {"name": "tls", "transport": "tls", "address": "127.0.0.1",
             "port": free_port("tcp"), "tls_client_auth": "require"}],
        "trunk": [
            {"name": "pbx", "side": "legacy", "listener": "udp", "transport": "udp",
             "peer": f"127.0.0.1:{pbx_port}", "allowed_sources": ["127.0.0.1/32"],
             "media": "rtp", "route_to": "carrier",
             "rate_limit": {"new_dialogs_per_source": rate, "new_dialogs_burst": rate}},
            {"name": "carrier", "side": "secure", "listener": "tls", "transport": "tls",
             "peer": f"127.0.0.1:{carrier_port}", "allowed_sources": ["127.0.0.1/32"],
             "tls_identity": ["sip:peer.srtpgw.test"], "media": "srtp", "suites": [SUITE],
             "route_to": "pbx"}],
    }, file=str(tmp / "gw.toml"))


@dataclass
class Setup:
    gw: Any
    keys: Path
    pbx: SipTestUA
    carrier: SipTestUA
    pbx_ep: RtpEndpoint
    car_ep: RtpEndpoint


@pytest.fixture
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    needs_app()
    from gateway.app import Gateway

    options = dict(getattr(request, "param", {}))
    carrier_cert = options.pop("carrier_cert", "peer")
    keys = init_keys(tmp_path / "keys").dir
    pbx = await SipTestUA.start("udp", "127.0.0.1", user="pbx")
    carrier = await SipTestUA.start("tls", "127.0.0.1", user="carrier",
                                    tls_server=server_context(keys, carrier_cert),
                                    tls_client=client_context(keys, "peer"),
                                    server_name=GATEWAY_NAME)
    pbx_ep, car_ep = await RtpEndpoint.open(), await RtpEndpoint.open()
    pbx.uas.answer = answerer(pbx_ep)
    gw = Gateway(config(tmp_path, keys, pbx.port, carrier.port, **options))
    await gw.start()
    try:
        yield Setup(gw, keys, pbx, carrier, pbx_ep, car_ep)
    finally:
        await gw.stop()
        await pbx.close()
        await carrier.close()
        pbx_ep.close()
        car_ep.close()


def handshake(port: int, ctx: ssl.SSLContext) -> bool:
    """Does a TLS handshake with the gateway complete (and survive the first read)?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                ctx.wrap_socket(raw, server_hostname=GATEWAY_NAME) as tls:
            tls.sendall(request("OPTIONS", transport="TLS"))
            return tls.recv(65535).startswith(b"SIP/2.0 ")
    except (ssl.SSLError, OSError):
        return False


def handshake_completes(port: int, ctx: ssl.SSLContext) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                ctx.wrap_socket(raw, server_hostname=GATEWAY_NAME):
            return True
    except (ssl.SSLError, OSError):
        return False


async def test_banned_address_cannot_complete_tls_handshake(setup: Setup) -> None:
    gw, port = setup.gw, setup.gw.stack.bound("tls")[1]
    good = client_context(setup.keys, "peer")
    assert await asyncio.to_thread(handshake, port, good)
    gw.firewall.ban("127.0.0.1", 60, gw.loop.time(), reason="test")
    refused = gw.stack.transports.counters["refused"]

    assert not await asyncio.to_thread(handshake_completes, port, good)
    assert gw.stack.transports.counters["refused"] == refused + 1
    assert gw.stack.transports.counters["tls_failures"] == 0  # refused before any handshake
    assert gw.firewall.counters()["pike.banned"] >= 1


@pytest.mark.parametrize("setup", [{"pike_max": 3}], indirect=True)
async def test_repeated_tls_failures_ban_the_source(setup: Setup) -> None:
    gw, port = setup.gw, setup.gw.stack.bound("tls")[1]
    no_cert = client_context(setup.keys, None)
    for _ in range(4):
        assert not await asyncio.to_thread(handshake, port, no_cert)
    for _ in range(30):
        if gw.firewall.bans(gw.loop.time()):
            break
        await asyncio.sleep(0.1)
    assert gw.firewall.counters()["tls.failure"] == 4
    assert [b.ip for b in gw.firewall.bans(gw.loop.time())] == ["127.0.0.1"]
    failures = gw.stack.transports.counters["tls_failures"]
    # now even the right certificate is refused before its handshake
    assert not await asyncio.to_thread(handshake, port, client_context(setup.keys, "peer"))
    assert gw.stack.transports.counters["tls_failures"] == failures


@pytest.mark.parametrize("setup", [{"carrier_cert": "gateway"}], indirect=True)
async def test_outbound_tls_failure_does_not_count_against_the_peer(setup: Setup) -> None:
    gw = setup.gw
    for n in range(3):  # the carrier presents the wrong identity to our outbound connection
        call = await setup.pbx.invite(f"sip:20{n}@{DOMAIN}", gw.stack.bound("udp"),
                                      plain_offer(setup.pbx_ep))
        assert (await call.wait_final(10)).status >= 400
    assert gw.stack.transports.counters["tls_failures"] == 3
    assert "tls.failure" not in gw.firewall.counters()
    assert gw.firewall.bans(gw.loop.time()) == []


def outbound(key: SdesKey) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key.key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=key.profile)
    policy.allow_repeat_tx = True
    return pylibsrtp.Session(policy)


@pytest.mark.parametrize("setup", [{"threshold": 10}], indirect=True)
async def test_srtp_auth_failures_on_a_live_call_raise_one_event(setup: Setup) -> None:
    gw, car_ep = setup.gw, setup.car_ep
    buf = io.StringIO()
    sink = attach_siem(stream=buf)
    try:
        offer, offered = sdes_offer(car_ep, (SUITE,))
        call = await setup.carrier.invite(f"sip:200@{DOMAIN}", gw.stack.bound("tls"), offer)
        final = await call.wait_final(5)
        assert final.status == 200
        apply_answer(car_ep, final.body, offered)
        await setup.pbx.wait_call(2)
        [call_id] = list(gw.calls)
        for _ in range(3):
            car_ep.send()
        await setup.pbx_ep.wait_for_packets(3, 3)

        assert car_ep.tx_key is not None
        fresh = outbound(car_ep.tx_key)
        for _ in range(10):  # tampered: genuine packets with one payload bit flipped
            wire = bytearray(fresh.protect(car_ep.build_packet(b"\x55" * 160)))
            wire[30] ^= 0x01
            car_ep.send_raw(bytes(wire))
        events: list[dict[str, Any]] = []
        for _ in range(50):  # the watch polls every few seconds
            events = [json.loads(line) for line in buf.getvalue().splitlines()]
            events = [e for e in events if e["kind"] == "srtp.auth_failures"]
            if events:
                break
            await asyncio.sleep(0.1)
        assert len(events) == 1, buf.getvalue()
        e = events[0]
        assert (e["call_id"], e["trunk"], e["leg"]) == (call_id, "carrier", "0.0")
        assert e["auth_failures"] == 10 and e["threshold"] == 10
        assert (await call.bye(3)).status == 200
        await asyncio.sleep(0.3)
        assert call_id not in gw.calls
    finally:
        detach_siem(sink)
    text = buf.getvalue()
    for key in (car_ep.tx_key, car_ep.rx_key):
        assert key is not None
        assert key.key.hex() not in text and base64.b64encode(key.key).decode() not in text
    assert sum('"srtp.auth_failures"' in line for line in text.splitlines()) == 1


def fake_in_dialog_invite(client: UdpClient) -> bytes:
    data = request("INVITE", port=client.port, body=SDP)
    return data.replace(b"To: <sip:100@gateway.srtpgw.test>",
                        f"To: <sip:100@gateway.srtpgw.test>;tag={uuid.uuid4().hex[:10]}".encode())


def flood(port: int, count: int) -> tuple[list[int | None], list[int | None]]:
    """INVITEs with invented To-tags from the PBX's own address (and trunk), then a new one."""
    flooder = UdpClient("127.0.0.1")
    try:
        statuses = []
        for _ in range(count):
            flooder.send(fake_in_dialog_invite(flooder), port)
            statuses += [status_of(r) for r in flooder.collect(2.0)]
        flooder.send(request("INVITE", port=flooder.port, body=SDP), port)
        return statuses, [status_of(r) for r in flooder.collect(2.0)]
    finally:
        flooder.close()


def metric_lines(gw: Any, name: str) -> list[str]:
    registry = CollectorRegistry()
    registry.register(StatsCollector(GatewayOps(gw).stats))
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(name)]


@pytest.mark.parametrize("setup", [{"rate": 3}], indirect=True)
async def test_invented_to_tags_are_rate_limited_real_dialogs_pass(setup: Setup) -> None:
    gw = setup.gw
    offer, _ = sdes_offer(setup.car_ep, (SUITE,))
    call = await setup.carrier.invite(f"sip:200@{DOMAIN}", gw.stack.bound("tls"), offer)
    assert (await call.wait_final(5)).status == 200
    at_pbx = await setup.pbx.wait_call(2)  # the established call's dialog on the pbx trunk

    statuses, fresh = await asyncio.to_thread(flood, gw.stack.bound("udp")[1], 12)
    assert statuses.count(503) >= 9, statuses
    assert set(statuses) <= {481, 503}
    assert fresh == [503]  # the bucket is empty: a new dialog from there is refused too ...
    # ... while requests inside the real dialog draw no tokens
    for _ in range(5):
        assert (await at_pbx.request("OPTIONS", timeout=3)).status == 200
    assert (await call.bye(3)).status == 200

    hits = metric_lines(gw, "srtpgw_firewall_rule_hits_total")
    assert hits and all('rule="ratelimit.' in line for line in hits), hits
    assert not [line for line in hits if "accepted" in line or "suppressed" in line]
    [accepted] = metric_lines(gw, "srtpgw_firewall_accepted_total")
    assert float(accepted.split()[-1]) == gw.firewall.accepted >= 8
    assert metric_lines(gw, "srtpgw_firewall_suppressed_reports_total")


def kinds(path: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in path.read_text().splitlines()] \
        if path.exists() else []


def send_and_wait(port: int, data: bytes) -> None:
    c = UdpClient("127.0.0.1")
    try:
        c.send(data, port)
        c.collect(0.5)
    finally:
        c.close()


async def wait_kind(path: Path, kind: str) -> None:
    for _ in range(30):
        if kind in kinds(path):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} in {path}: {kinds(path)}")


async def test_siem_sink_follows_start_reload_and_stop(tmp_path: Path) -> None:
    needs_app()
    from gateway.app import Gateway

    keys = init_keys(tmp_path / "keys").dir
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    cfg = config(tmp_path, keys, free_port("udp"), free_port("tcp"), security_file=first)
    gw = Gateway(cfg)
    await gw.start()
    port = gw.stack.bound("udp")[1]
    try:
        scanner = request("OPTIONS", extra="User-Agent: sipvicious\r\n")
        await asyncio.to_thread(send_and_wait, port, scanner)
        await wait_kind(first, "firewall.policy.user_agent")

        GatewayOps(gw).apply_config(dataclasses.replace(
            cfg, logging=dataclasses.replace(cfg.logging, security_file=second)))
        await asyncio.to_thread(send_and_wait, port, request("SUBSCRIBE"))
        await wait_kind(second, "firewall.policy.method")
        assert "firewall.policy.method" not in kinds(first)
    finally:
        await gw.stop()
    assert gw.siem is None
    assert not [h for h in logging.getLogger(SECURITY_LOGGER).handlers
                if isinstance(h, SiemHandler)]
