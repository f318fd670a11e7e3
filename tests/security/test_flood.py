"""Flood: one source sends INVITEs at 20x its allowed rate while the legitimate PBX keeps
placing real calls through the gateway to a TLS carrier; the flooder is banned, >= 99% of the
legitimate calls succeed, and memory stays bounded under a spray from 3000 addresses.

The gateway runs as `srtpgw run`; the PBX and carrier are the independent test phones of
tests.support. The flooder has its own loopback address (127.0.0.2). Every phase is bounded in
count and time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from gateway.ops.keys import init_keys
from tests.security.corpus import SDP
from tests.security.harness import (
    Gateway,
    UdpClient,
    assert_clean_log,
    needs_app,
    request,
    rss_kib,
    start_gateway,
)
from tests.support.certs import GATEWAY_NAME, client_context, server_context
from tests.support.phone import answerer, plain_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sip_ua import SipTestUA

RATE = 5               # new dialogs per second allowed per source
FLOOD_SECONDS = 3.0
DOMAIN = "gateway.srtpgw.test"


def flood(port: int, stop: threading.Event, sent: list[int]) -> None:
    c = UdpClient("127.0.0.2")
    try:
        interval = 1.0 / (RATE * 20)
        t0 = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - t0 < FLOOD_SECONDS:
            c.send(request("INVITE", host="127.0.0.2", port=c.port, body=SDP), port)
            n += 1
            time.sleep(max(0.0, t0 + n * interval - time.monotonic()))
        sent.append(n)
    finally:
        c.close()


def spray(port: int, count: int) -> None:
    for i in range(count):
        c = UdpClient(f"127.1.{i // 250}.{i % 250 + 1}")
        c.send(request("INVITE", host=c.ip, port=c.port), port)
        c.close()


async def call(pbx: SipTestUA, gw: Gateway, ep: RtpEndpoint, n: int) -> bool:
    dialog = await pbx.invite(f"sip:49301{n:04d}@{DOMAIN}", ("127.0.0.1", gw.ports["udp"]),
                              plain_offer(ep))
    try:
        final = await dialog.wait_final(5)
    except TimeoutError:
        return False
    if final.status != 200:
        return False
    return (await dialog.bye(5)).status == 200


@pytest.mark.slow
async def test_flooder_banned_legitimate_calls_served(tmp_path: Path) -> None:
    needs_app()
    keys = init_keys(tmp_path / "keys").dir
    pbx = await SipTestUA.start("udp", "127.0.0.1", user="pbx", domain="pbx.internal")
    carrier = await SipTestUA.start("tls", "127.0.0.1", user="carrier",
                                    tls_server=server_context(keys, "peer"),
                                    tls_client=client_context(keys, "peer"),
                                    server_name=GATEWAY_NAME)
    pbx_ep, car_ep = await RtpEndpoint.open(), await RtpEndpoint.open()
    carrier.uas.answer = answerer(car_ep)
    gw = await asyncio.to_thread(start_gateway, tmp_path, rate=RATE, burst=RATE, pike_max=60,
                                 pbx_peer=pbx.port, carrier_peer=carrier.port, keys=keys)
    assert gw.proc is not None
    try:
        assert await call(pbx, gw, pbx_ep, 0)
        rss_before = rss_kib(gw.proc.pid)

        stop, sent = threading.Event(), []
        flooder = threading.Thread(target=flood, args=(gw.ports["udp"], stop, sent))
        flooder.start()
        results = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < FLOOD_SECONDS:  # the PBX stays within its rate
            started = time.monotonic()
            results.append(await call(pbx, gw, pbx_ep, len(results) + 1))
            await asyncio.sleep(max(0.0, started + 1.5 / RATE - time.monotonic()))
        stop.set()
        await asyncio.to_thread(flooder.join, 10)
        assert sent and sent[0] >= RATE * 20 * FLOOD_SECONDS * 0.8
        assert len(results) >= 8 and sum(results) / len(results) >= 0.99, results

        bans = [e for e in gw.events() if e["kind"] == "pike.ban"]
        assert [e["source"] for e in bans] == ["127.0.0.2"]
        limited = [e for e in gw.events() if e["kind"] == "firewall.ratelimit.source"]
        assert limited and {e["source"] for e in limited} == {"127.0.0.2"}

        await asyncio.to_thread(spray, gw.ports["udp"], 3000)
        assert await call(pbx, gw, pbx_ep, 9999)
        growth = rss_kib(gw.proc.pid) - rss_before
        assert growth < 20 * 1024, f"RSS grew by {growth} KiB"
        unknown = [e for e in gw.events() if e["kind"] == "firewall.acl.unknown_source"]
        assert 0 < len(unknown) <= 100  # one event per source, capped per rule and interval
        print(f"flood: {sent[0]} INVITEs from 127.0.0.2 in {FLOOD_SECONDS}s, banned after "
              f"{bans[0]['ts']}; legitimate calls {sum(results)}/{len(results)}; "
              f"RSS +{growth} KiB after 3000-source spray; {len(unknown)} unknown-source events")
    finally:
        await asyncio.to_thread(gw.stop)
        await pbx.close()
        await carrier.close()
        pbx_ep.close()
        car_ep.close()
    assert_clean_log(gw)
