"""RFC 3263 server location end to end: a DNS responder on 127.0.0.1 serves SRV/A records, real
SIP stacks (TLS with certificates, UDP) answer, and the gateway's stack finds them: priority
order, failover past a refusing target, fallback to A, and TTL expiry."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest
import uvloop

from gateway.config import Config, HostPort
from gateway.sip.errors import TransportFailure
from gateway.sip.stack import SipStack
from gateway.sip.transport import Target
from tests.integration.test_sip_dns_helpers import SRV, A, Zone, serve
from tests.integration.test_sip_helpers import (
    GATEWAY_ID,
    Answering,
    Keys,
    capture,
    config,
    make_keys,
    request,
    started,
)

pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")
DOMAIN = "gateway.srtpgw.test"  # the name the test certificates carry (RFC 5922 via SRV)


@pytest.fixture(scope="module")
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("locatekeys"))


def _with_dns(cfg: Config, server: tuple[str, int]) -> Config:
    return dataclasses.replace(cfg, sip=dataclasses.replace(
        cfg.sip, dns_servers=(HostPort(*server),)))


def _closed_port() -> int:
    """A TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _gateway(keys: Keys, zone: Zone) -> tuple[SipStack, asyncio.DatagramTransport]:
    dns, addr = await serve(zone)
    return await started(_with_dns(config(keys), addr), Answering()), dns


def _service(transport: str = "tls", port: int = 5061) -> Target:
    return Target(transport, DOMAIN, port, listener=transport,  # type: ignore[arg-type]
                  tls_identity=(GATEWAY_ID,) if transport == "tls" else (), srv=True)


async def test_srv_priority_order_is_followed(keys: Keys) -> None:
    first = await started(config(keys), Answering())
    second = await started(config(keys), Answering())
    zone = Zone()
    zone.srv(f"_sips._tcp.{DOMAIN}", (20, 0, second.bound("tls")[1], "b.srv.test"),
             (10, 0, first.bound("tls")[1], "a.srv.test"))
    zone.a("a.srv.test", "127.0.0.1")
    zone.a("b.srv.test", "127.0.0.1")
    gw, dns = await _gateway(keys, zone)
    try:
        resp = await asyncio.wait_for(gw.request(request("OPTIONS", "prio"), _service()), 5)
        assert resp.status == 200
        assert len(first.transports._conns) == 1 and not second.transports._conns
        assert (f"_sips._tcp.{DOMAIN}", SRV) in zone.queries
    finally:
        for s in (gw, first, second):
            await s.stop()
        dns.close()


async def test_failover_to_the_next_target_when_the_first_refuses(keys: Keys) -> None:
    """The preferred target refuses connections; the request still goes through on the second,
    and the certificate is checked against the SIP domain, not the SRV target's name."""
    backup = await started(config(keys), Answering())
    zone = Zone()
    zone.srv(f"_sips._tcp.{DOMAIN}", (10, 100, _closed_port(), "down.srv.test"),
             (20, 100, backup.bound("tls")[1], "up.srv.test"))
    zone.a("down.srv.test", "127.0.0.1")
    zone.a("up.srv.test", "127.0.0.1")
    gw, dns = await _gateway(keys, zone)
    try:
        with capture() as cap:
            resp = await asyncio.wait_for(gw.request(request("OPTIONS", "fo"), _service()), 5)
        assert resp.status == 200
        assert [e["next"] for e in cap.events("sip.failover")] == [
            f"127.0.0.1:{backup.bound('tls')[1]}"]
        assert backup.transports.counters["tls_handshakes"] == 1
    finally:
        await gw.stop()
        await backup.stop()
        dns.close()


async def test_every_target_down_is_a_transport_failure(keys: Keys) -> None:
    zone = Zone()
    zone.srv(f"_sip._tcp.{DOMAIN}", (10, 0, _closed_port(), "x.srv.test"),
             (10, 0, _closed_port(), "y.srv.test"))
    zone.a("x.srv.test", "127.0.0.1")
    zone.a("y.srv.test", "127.0.0.1")
    gw, dns = await _gateway(keys, zone)
    try:
        with pytest.raises(TransportFailure, match=r"connect to 127\.0\.0\.1"):
            await asyncio.wait_for(gw.request(request("OPTIONS", "down"),
                                              _service("tcp", 5060)), 5)
    finally:
        await gw.stop()
        dns.close()


async def test_no_srv_records_falls_back_to_the_hosts_address(keys: Keys) -> None:
    peer = await started(config(keys), Answering())
    zone = Zone()
    zone.a(DOMAIN, "127.0.0.1")  # the domain exists, but has no SRV records
    gw, dns = await _gateway(keys, zone)
    try:
        target = _service("tcp", peer.bound("tcp")[1])  # the port a trunk would default to
        resp = await asyncio.wait_for(gw.request(request("OPTIONS", "a"), target), 5)
        assert resp.status == 200
        assert zone.queries == [(f"_sip._tcp.{DOMAIN}", SRV), (DOMAIN, A)]
    finally:
        await gw.stop()
        await peer.stop()
        dns.close()


async def test_ttl_expiry_moves_udp_requests_to_the_new_target(keys: Keys) -> None:
    """UDP: the located target holds for the answer's TTL (retransmissions included), then a
    new lookup is made and requests follow the new record."""
    old_h, new_h = Answering(), Answering()
    old, new = await started(config(keys), old_h), await started(config(keys), new_h)
    zone = Zone()
    zone.srv(f"_sip._udp.{DOMAIN}", (10, 0, old.bound("udp")[1], "old.srv.test"), ttl=1)
    zone.a("old.srv.test", "127.0.0.1", ttl=1)
    zone.a("new.srv.test", "127.0.0.1", ttl=1)
    gw, dns = await _gateway(keys, zone)
    try:
        target = _service("udp", 5060)
        assert (await gw.request(request("OPTIONS", "t1"), target)).status == 200
        zone.srv(f"_sip._udp.{DOMAIN}", (10, 0, new.bound("udp")[1], "new.srv.test"), ttl=1)
        assert (await gw.request(request("OPTIONS", "t2"), target)).status == 200
        assert len(old_h.requests) == 2 and not new_h.requests
        await asyncio.sleep(1.2)
        assert (await gw.request(request("OPTIONS", "t3"), target)).status == 200
        assert len(new_h.requests) == 1
        assert zone.queries.count((f"_sip._udp.{DOMAIN}", SRV)) == 2
    finally:
        for s in (gw, old, new):
            await s.stop()
        dns.close()


async def test_udp_timeout_sends_the_next_request_to_the_next_target(keys: Keys) -> None:
    """UDP has no connect to fail: a transaction timeout on the first target demotes it, so the
    next request goes to the second (timer F is 64*T1 = 3.2 s with the tests' T1)."""
    from gateway.sip.errors import TransactionTimeout

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives and never answers
    backup = await started(config(keys), Answering())
    zone = Zone()
    zone.srv(f"_sip._udp.{DOMAIN}", (10, 0, silent.getsockname()[1], "mute.srv.test"),
             (20, 0, backup.bound("udp")[1], "up.srv.test"))
    zone.a("mute.srv.test", "127.0.0.1")
    zone.a("up.srv.test", "127.0.0.1")
    gw, dns = await _gateway(keys, zone)
    try:
        with pytest.raises(TransactionTimeout):
            await asyncio.wait_for(gw.request(request("OPTIONS", "mute"),
                                              _service("udp", 5060)), 6)
        resp = await asyncio.wait_for(gw.request(request("OPTIONS", "next"),
                                                 _service("udp", 5060)), 3)
        assert resp.status == 200
    finally:
        await gw.stop()
        await backup.stop()
        dns.close()
        silent.close()


async def test_a_burst_of_requests_makes_one_lookup(keys: Keys) -> None:
    peer = await started(config(keys), Answering())
    zone = Zone()
    zone.srv(f"_sip._udp.{DOMAIN}", (10, 0, peer.bound("udp")[1], "p.srv.test"))
    zone.a("p.srv.test", "127.0.0.1")
    gw, dns = await _gateway(keys, zone)
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(
            gw.request(request("OPTIONS", f"burst{i}"), _service("udp", 5060))
            for i in range(20))), 5)
        assert [r.status for r in answers] == [200] * 20
        assert zone.queries == [(f"_sip._udp.{DOMAIN}", SRV), ("p.srv.test", A)]
    finally:
        await gw.stop()
        await peer.stop()
        dns.close()


async def test_trunk_peer_without_port_locates_by_srv(keys: Keys) -> None:
    """The config path: a trunk whose peer is a bare host name makes SRV targets."""
    from gateway.config import Trunk

    trunk = Trunk("t", "secure", "tls", HostPort(DOMAIN, 5061), "tls", "srtp", peer_srv=True)
    assert Target.from_trunk(trunk).srv
    assert Target.from_trunk(trunk, trunk.peer).srv
    assert not Target.from_trunk(trunk, HostPort("127.0.0.9", 5061)).srv  # a Contact is a host
