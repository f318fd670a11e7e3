"""RFC 3263 sans-IO parts: DNS wire format, SRV ordering (RFC 2782), the TTL cache, and the
config keys that turn SRV location on (a trunk peer without a port, [sip] dns_servers)."""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, HostPort, config_from_dict
from gateway.sip.dns import (
    AAAA,
    SRV,
    A,
    AddressRecord,
    DnsError,
    SrvRecord,
    build_query,
    parse_response,
)
from gateway.sip.locate import Candidate, DnsCache, srv_name, srv_order
from tests.integration.test_sip_dns_helpers import SOA, Rr, reply


def test_srv_names_per_transport() -> None:
    assert srv_name("tls", "carrier.test") == "_sips._tcp.carrier.test"
    assert srv_name("tcp", "carrier.test.") == "_sip._tcp.carrier.test"
    assert srv_name("udp", "carrier.test") == "_sip._udp.carrier.test"


def test_srv_answer_with_additional_addresses_parses() -> None:
    q = build_query("_sips._tcp.carrier.test", SRV, 0x1234)
    data = reply(q, [Rr("_sips._tcp.carrier.test", SRV, 300, (10, 60, 5061, "a.carrier.test")),
                     Rr("_sips._tcp.carrier.test", SRV, 120, (20, 0, 5062, "b.carrier.test"))],
                 additional=[Rr("a.carrier.test", A, 30, "192.0.2.1"),
                             Rr("a.carrier.test", AAAA, 30, "2001:db8::1")], compress=True)
    ans = parse_response(data, 0x1234, "_sips._tcp.carrier.test.", SRV)
    assert ans.records == (SrvRecord(10, 60, 5061, "a.carrier.test", 300),
                           SrvRecord(20, 0, 5062, "b.carrier.test", 120))
    assert ans.extra == (AddressRecord("a.carrier.test", "192.0.2.1", 30),
                         AddressRecord("a.carrier.test", "2001:db8::1", 30))
    assert not ans.negative


def test_nxdomain_carries_the_soa_negative_ttl() -> None:
    q = build_query("nothing.test", A, 7)
    ans = parse_response(reply(q, [], authority=[Rr("test", SOA, 900, 45)], rcode=3), 7,
                         "nothing.test", A)
    assert ans.negative and ans.records == () and ans.negative_ttl == 45


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda d: d[:8], "short"),
    (lambda d: b"\x00\x09" + d[2:], "not the answer"),  # another id
    (lambda d: d[:2] + bytes((d[2] | 0x02,)) + d[3:], "truncated"),
    (lambda d: d[:3] + bytes((d[3] | 0x02,)) + d[4:], "rcode 2"),  # SERVFAIL
    (lambda d: d[:-2], "runs past"),
])
def test_bad_answers_are_typed_errors(mutate: object, match: str) -> None:
    q = build_query("host.test", A, 8)
    data = reply(q, [Rr("host.test", A, 60, "192.0.2.7")])
    with pytest.raises(DnsError, match=match):
        parse_response(mutate(data), 8, "host.test", A)  # type: ignore[operator]


def test_answer_to_another_question_refused() -> None:
    q = build_query("other.test", A, 9)
    with pytest.raises(DnsError, match="another question"):
        parse_response(reply(q, []), 9, "host.test", A)


def test_compression_pointer_loop_is_an_error() -> None:
    q = build_query("host.test", A, 5)
    data = bytearray(reply(q, [Rr("host.test", A, 60, "192.0.2.7")]))
    data[12:14] = struct.pack("!H", 0xC000 | 12)  # the question's name points at itself
    with pytest.raises(DnsError):
        parse_response(bytes(data), 5, "host.test", A)


@given(st.binary(max_size=300))
def test_garbage_is_a_dns_error_or_an_answer(data: bytes) -> None:
    with contextlib.suppress(DnsError):
        parse_response(data, struct.unpack_from("!H", data)[0] if len(data) > 1 else 0,
                       "host.test", A)


def _srv(prio: int, weight: int, target: str) -> SrvRecord:
    return SrvRecord(prio, weight, 5061, target, 60)


def test_priority_first_then_weights() -> None:
    recs = [_srv(20, 0, "c"), _srv(10, 10, "a"), _srv(10, 90, "b")]
    assert srv_order(recs, lambda: 0.5)[-1] == Candidate("c", 5061)
    firsts = Counter(srv_order(recs, iter([x / 1000, 0.0, 0.0]).__next__)[0].host
                     for x in range(1000))
    assert firsts == {"a": 101, "b": 899}  # a while the draw is <= 10 of the total 100


def test_weights_are_a_weighted_draw_without_replacement() -> None:
    recs = [_srv(1, 1, "light"), _srv(1, 3, "heavy"), _srv(1, 0, "zero")]
    steps = itertools.cycle([i / 997 for i in range(997)])
    orders = [tuple(c.host for c in srv_order(recs, steps.__next__)) for _ in range(3000)]
    assert all(sorted(o) == ["heavy", "light", "zero"] for o in orders)
    firsts = Counter(o[0] for o in orders)
    assert 0.70 < firsts["heavy"] / 3000 < 0.80 and 0.20 < firsts["light"] / 3000 < 0.30
    assert firsts["zero"] < 10  # weight 0: chosen first only when the draw is exactly 0


def test_all_zero_weights_keep_every_target() -> None:
    recs = [_srv(1, 0, "x"), _srv(1, 0, "y")]
    assert sorted(c.host for c in srv_order(recs, lambda: 0.3)) == ["x", "y"]


def test_dot_target_means_no_service() -> None:
    assert srv_order([_srv(0, 0, "")], lambda: 0.0) == []


def test_cache_honours_ttl() -> None:
    cache = DnsCache()
    assert cache.put("h", A, ("192.0.2.1",), 2, now=100.0) == 102.0
    assert cache.get("h", A, 101.9) == (102.0, ("192.0.2.1",))
    assert cache.get("h", A, 102.0) is None
    cache.put("z", A, (), 0, now=100.0)  # TTL 0: not cached
    assert cache.get("z", A, 100.0) is None


_BASE = {
    "listener": [{"name": "tls", "transport": "tls", "address": "127.0.0.1", "port": 5061}],
    "trunk": [{"name": "t", "side": "secure", "listener": "tls", "transport": "tls",
               "media": "srtp", "tls_identity": ["sip:carrier.test"]}],
}


def _cfg(peer: str, **sip: object) -> object:
    raw = {**_BASE, "trunk": [{**_BASE["trunk"][0], "peer": peer}], "sip": sip}
    return config_from_dict(raw, check_files=False)


@pytest.mark.parametrize(("peer", "srv", "port"), [
    ("carrier.test", True, 5061), ("carrier.test:5070", False, 5070),
    ("192.0.2.1", False, 5061), ("[2001:db8::1]", False, 5061)])
def test_peer_without_port_names_a_service(peer: str, srv: bool, port: int) -> None:
    trunk = _cfg(peer).trunks[0]  # type: ignore[attr-defined]
    assert (trunk.peer_srv, trunk.peer.port) == (srv, port)


def test_dns_servers_parsed_and_checked() -> None:
    cfg = _cfg("carrier.test", dns_servers=["127.0.0.1:5353", "::1", "[::1]:54"])
    assert cfg.sip.dns_servers == (HostPort("127.0.0.1", 5353), HostPort("::1", 53),  # type: ignore[attr-defined]
                                   HostPort("::1", 54))
    with pytest.raises(ConfigError, match=r"sip\.dns_servers\[1\]"):
        _cfg("carrier.test", dns_servers=["127.0.0.1", "ns.example.test"])


@pytest.mark.parametrize("name", ["a..b", "x" * 64 + ".test", "bad\ufffd.test"])
def test_unusable_names_are_dns_errors(name: str) -> None:
    with pytest.raises(DnsError):
        build_query(name, A, 1)
