"""Route selection (gateway.b2bua.routing); trunk classification is gateway.policy.acl."""

from __future__ import annotations

from gateway.b2bua.routing import select_route
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
