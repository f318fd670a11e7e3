"""Flood: one source sends INVITEs at 20x its allowed rate while the legitimate trunk keeps
working; the flooder is banned, >= 99% of legitimate requests succeed, memory stays bounded.

The flooder has its own loopback address (127.0.0.2); a spray from 3000 other loopback addresses
exercises the bounded source tables. Every phase is bounded in count and time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.security.harness import Gateway, UdpClient, final_status, request

RATE = 5          # new dialogs per second allowed per source (flood_gateway fixture)
FLOOD_SECONDS = 3.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def flood(gw: Gateway, stop: threading.Event, sent: list[int]) -> None:
    c = UdpClient("127.0.0.2")
    try:
        interval = 1.0 / (RATE * 20)
        t0 = time.monotonic()
        n = 0
        while not stop.is_set() and time.monotonic() - t0 < FLOOD_SECONDS:
            c.send(request("INVITE", host="127.0.0.2", port=c.port), gw.ports["udp"])
            n += 1
            time.sleep(max(0.0, t0 + n * interval - time.monotonic()))
        sent.append(n)
        c.collect(0.2, until_final=False)
    finally:
        c.close()


def test_flooder_banned_legitimate_traffic_served(flood_gateway: Gateway) -> None:
    gw = flood_gateway
    assert gw.proc is not None
    legit = UdpClient("127.0.0.1")
    try:
        legit.send(request("OPTIONS", port=legit.port), gw.ports["udp"])
        assert final_status(legit.collect(3.0)) == 200
        rss_before = rss_kib(gw.proc.pid)

        stop, sent = threading.Event(), []
        flooder = threading.Thread(target=flood, args=(gw, stop, sent))
        flooder.start()
        ok = total = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < FLOOD_SECONDS:
            total += 1
            legit.send(request("OPTIONS", port=legit.port), gw.ports["udp"])
            if final_status(legit.collect(2.0)) == 200:
                ok += 1
            time.sleep(0.05)
        stop.set()
        flooder.join(10)
        assert sent and sent[0] >= RATE * 20 * FLOOD_SECONDS * 0.8
        assert total >= 20 and ok / total >= 0.99, (ok, total)

        ban = [e for e in gw.events() if e["kind"] == "pike.ban"]
        assert [e["source"] for e in ban] == ["127.0.0.2"]

        # spray: 3000 one-shot sources the ACL does not know
        for i in range(3000):
            c = UdpClient(f"127.1.{i // 250}.{i % 250 + 1}")
            c.send(request("INVITE", host=c.ip, port=c.port), gw.ports["udp"])
            c.close()
        legit.send(request("OPTIONS", port=legit.port), gw.ports["udp"])
        assert final_status(legit.collect(3.0)) == 200
        growth = rss_kib(gw.proc.pid) - rss_before
        assert growth < 20 * 1024, f"RSS grew by {growth} KiB"
        kinds = {e["kind"] for e in gw.events()}
        assert "firewall.acl.unknown_source" in kinds
        spray_events = sum(1 for e in gw.events() if e["kind"] == "firewall.acl.unknown_source")
        assert spray_events <= 100
    finally:
        legit.close()
