"""The Firewall facade: admission, verdicts, rate limits, bans, counters, log suppression."""

from __future__ import annotations

import io
import json

import pytest

from gateway.ops.log import configure_security_events, security_events_suppressed
from gateway.policy.acl import Source
from gateway.policy.events import attach_siem, detach_siem
from gateway.policy.firewall import Firewall
from tests.security.policy_configs import make_config
from tests.unit.test_policy_screening import request

PBX = Source("legacy", "udp", "10.1.0.1", 5070)
STRANGER = Source("legacy", "udp", "203.0.113.9", 5060)
CARRIER = Source("secure", "tls", "127.0.0.1", 40000, ("sip:carrier.example.test",))


@pytest.fixture
def events():
    buf = io.StringIO()
    h = attach_siem(stream=buf)
    yield lambda: [json.loads(x) for x in buf.getvalue().splitlines()]
    detach_siem(h)


def test_admit_known_drop_unknown(events) -> None:
    fw = Firewall(make_config())
    assert fw.admit(PBX, 0.0) and fw.admit(CARRIER, 0.0)
    assert not fw.admit(STRANGER, 0.0)
    assert not fw.admit(Source("secure", "tls", "127.0.0.1", 1, ("sip:evil.test",)), 0.0)
    assert fw.counters()["acl.unknown_source"] == 2
    kinds = [(e["kind"], e["reason"]) for e in events()]
    assert kinds == [("firewall.acl.unknown_source", "source-not-allowed"),
                     ("firewall.acl.unknown_source", "identity-mismatch")]


def test_unknown_source_403_mode() -> None:
    fw = Firewall(make_config(firewall={"unknown_source": "403"}))
    assert fw.admit(STRANGER, 0.0)
    v = fw.inspect(request("OPTIONS"), STRANGER, False, 0.0)
    assert (v.action, v.status, v.rule) == ("reject", 403, "acl.unknown_source")


def test_accept_reject_drop() -> None:
    fw = Firewall(make_config())
    v = fw.inspect(request(), PBX, False, 0.0)
    assert v.accepted and v.trunk.name == "pbx"
    v = fw.inspect(request("MESSAGE"), CARRIER, False, 0.0)
    assert (v.action, v.status, v.rule) == ("reject", 405, "policy.method")
    v = fw.inspect(request(extra="User-Agent: friendly-scanner"), PBX, False, 0.0)
    assert (v.action, v.rule) == ("drop", "policy.user_agent")
    c = fw.counters()
    assert fw.accepted == 1 and c == {"policy.method": 1, "policy.user_agent": 1}


def test_rate_limit_new_dialogs_spares_in_dialog() -> None:
    fw = Firewall(make_config())
    verdicts = [fw.inspect(request(), PBX, False, 0.0) for _ in range(7)]
    assert [v.action for v in verdicts] == ["accept"] * 5 + ["reject"] * 2
    assert verdicts[5].status == 503 and verdicts[5].rule == "ratelimit.source"
    assert dict(verdicts[5].headers)["Retry-After"] == "1"
    # in-dialog requests, ACK and CANCEL never draw tokens
    assert fw.inspect(request("BYE"), PBX, True, 0.0).accepted
    assert fw.inspect(request("CANCEL"), PBX, False, 0.0).accepted
    assert fw.inspect(request("ACK"), PBX, False, 0.0).accepted
    # out-of-dialog OPTIONS use their own bucket
    assert fw.inspect(request("OPTIONS"), PBX, False, 0.0).accepted
    # refilled one second later (5/s)
    assert fw.inspect(request(), PBX, False, 1.0).accepted


def test_pike_bans_and_admit_refuses(events) -> None:
    cfg = make_config(firewall={"pike": {"window": 1.0, "max_requests": 20, "ban_time": 30}})
    fw = Firewall(cfg)
    actions = [fw.inspect(request("BYE"), PBX, True, i * 0.001).action for i in range(25)]
    assert actions[:20] == ["accept"] * 20 and set(actions[20:]) == {"drop"}
    assert not fw.admit(PBX, 1.0)
    assert [b.ip for b in fw.bans(1.0)] == ["10.1.0.1"]
    assert fw.admit(PBX, 31.0)
    bans = [e for e in events() if e["kind"] == "pike.ban"]
    assert len(bans) == 1 and bans[0]["source"] == "10.1.0.1" and bans[0]["ban_time"] == 30


def test_unknown_source_flood_gets_banned() -> None:
    cfg = make_config(firewall={"pike": {"window": 1.0, "max_requests": 10, "ban_time": 30}})
    fw = Firewall(cfg)
    for i in range(50):
        fw.admit(STRANGER, i * 0.001)
    c = fw.counters()
    assert c["pike.ban"] == 1 and c["pike.banned"] == 39 and c["acl.unknown_source"] == 11


def test_logs_once_per_source_and_interval(events) -> None:
    fw = Firewall(make_config())
    configure_security_events(10)  # firewall.log_interval, as the app applies it
    for i in range(100):
        fw.inspect(request("MESSAGE"), CARRIER, False, i * 0.01)
    fw.inspect(request("MESSAGE"), CARRIER, False, 10.5)
    got = [e for e in events() if e["kind"] == "firewall.policy.method"]
    assert len(got) == 2 and got[1]["suppressed"] == 99
    assert fw.counters()["policy.method"] == 101


def test_unparseable_and_tls_failures_counted(events) -> None:
    fw = Firewall(make_config())
    assert fw.unparseable(PBX, 400, "more than one To", 0.0) == "sanity.duplicate_header"
    fw.report_tls_failure(STRANGER, "peer did not return a certificate", 0.0)
    c = fw.counters()
    assert c["sanity.duplicate_header"] == 1 and c["tls.failure"] == 1
    assert {e["kind"] for e in events()} == {"firewall.sanity.duplicate_header",
                                              "firewall.tls.failure"}


def test_reload_keeps_bans_applies_rules() -> None:
    fw = Firewall(make_config())
    assert fw.inspect(request("INFO"), PBX, False, 0.0).action == "accept"
    fw.ban("10.1.0.1", 60, 0.0)
    assert fw.inspect(request("INFO"), PBX, False, 0.0).action == "drop"
    fw.reload(make_config(trunk0={"methods": ["INVITE", "ACK", "BYE"]}))
    assert not fw.admit(PBX, 1.0)
    assert fw.unban("10.1.0.1")
    assert fw.inspect(request("INFO"), PBX, False, 2.0).status == 405


def test_bounded_under_many_sources() -> None:
    fw = Firewall(make_config(trunk0={"allowed_sources": ["10.0.0.0/8"]}), max_sources=500)
    for i in range(20_000):
        src = Source("legacy", "udp", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 5060)
        fw.inspect(request(), src, False, i * 1e-4)
    t = fw.tables()
    assert t["tracked_sources"] <= 500 and t["rate_limited_sources"] <= 500
    assert fw.counters()["ratelimit.trunk"] > 19_000
    assert security_events_suppressed()["firewall.ratelimit.trunk"] > 18_000
    assert set(fw.counters()) == {"ratelimit.trunk"}


def test_admit_connection_before_handshake() -> None:
    fw = Firewall(make_config())
    assert fw.admit_connection(Source("secure", "tls", "127.0.0.9", 1), 0.0)
    assert not fw.admit_connection(Source("secure", "tls", "10.1.0.1", 1), 0.0)
    fw.ban("127.0.0.9", 60, 0.0)
    assert not fw.admit_connection(Source("secure", "tls", "127.0.0.9", 1), 1.0)
    assert fw.counters()["pike.banned"] == 1 and fw.counters()["acl.unknown_source"] == 1
