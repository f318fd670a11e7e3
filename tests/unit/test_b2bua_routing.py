"""Trunk classification and route selection (gateway.b2bua.routing)."""

from __future__ import annotations

from gateway.b2bua.routing import classify, identity_allowed, select_route, source_allowed
from gateway.config import config_from_dict


def make_config(**overrides):
    legacy = {"name": "pbx", "side": "legacy", "listener": "udp", "transport": "udp",
              "peer": "127.0.0.1:5070", "media": "rtp", "route_to": "carrier"}
    other = {"name": "pbx2", "side": "legacy", "listener": "udp", "transport": "udp",
             "peer": "127.0.0.9:5070", "media": "rtp", "allowed_sources": ["10.1.0.0/16"],
             "route": [{"prefix": "00", "strip": 2, "to": "carrier"},
                       {"domain": "pbx.example", "to": "pbx"}]}
    secure = {"name": "carrier", "side": "secure", "listener": "tls", "transport": "tls",
              "peer": "127.0.0.1:5081", "media": "srtp", "route_to": "pbx",
              "tls_identity": ["sip:peer.srtpgw.test"]}
    legacy.update(overrides)
    raw = {"listener": [{"name": "udp", "transport": "udp", "address": "127.0.0.1", "port": 5060},
                        {"name": "tls", "transport": "tls", "address": "127.0.0.1",
                         "port": 5061}],
           "trunk": [legacy, other, secure]}
    return config_from_dict(raw, check_files=False)


def test_source_defaults_to_peer_address():
    cfg = make_config()
    pbx = cfg.trunk("pbx")
    assert source_allowed(pbx, "127.0.0.1")
    assert not source_allowed(pbx, "127.0.0.2")
    assert not source_allowed(pbx, "not-an-ip")


def test_allowed_sources_networks():
    cfg = make_config()
    pbx2 = cfg.trunk("pbx2")
    assert source_allowed(pbx2, "10.1.200.3")
    assert not source_allowed(pbx2, "127.0.0.9")


def test_classify_by_listener_source_and_identity():
    cfg = make_config()
    assert classify(cfg, "udp", "127.0.0.1").name == "pbx"
    assert classify(cfg, "udp", "10.1.0.1").name == "pbx2"
    assert classify(cfg, "udp", "192.0.2.1") is None
    assert classify(cfg, "tls", "127.0.0.1") is None
    assert classify(cfg, "tls", "127.0.0.1", ["SIP:peer.srtpgw.test"]).name == "carrier"
    assert classify(cfg, "tls", "127.0.0.1", ["sip:intruder.test"]) is None


def test_fingerprint_identity():
    cfg = make_config()
    t = cfg.trunk("carrier")
    assert not identity_allowed(t, [], "AA:BB")
    pinned = type(t)(**{**{f: getattr(t, f) for f in t.__dataclass_fields__},
                        "tls_identity": (), "tls_fingerprints": ("sha-256 AA:BB:CC",)})
    assert identity_allowed(pinned, [], "aabbcc")
    assert not identity_allowed(pinned, [], "aabbcd")


def test_route_to_default():
    cfg = make_config()
    r = select_route(cfg, cfg.trunk("pbx"), "4930123", "gateway.srtpgw.test")
    assert r.trunk.name == "carrier" and r.user == "4930123"


def test_routes_prefix_strip_and_domain():
    cfg = make_config()
    pbx2 = cfg.trunk("pbx2")
    r = select_route(cfg, pbx2, "004930123", "x")
    assert (r.trunk.name, r.user) == ("carrier", "4930123")
    r = select_route(cfg, pbx2, "123", "PBX.example.")
    assert (r.trunk.name, r.user) == ("pbx", "123")
    assert select_route(cfg, pbx2, "123", "other.example") is None
