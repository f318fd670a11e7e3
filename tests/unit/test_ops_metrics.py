"""Metric families built from a Stats snapshot, parsed back with the Prometheus parser."""

from __future__ import annotations

import asyncio
import time

from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics import Metrics, Stats


def parse(text: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_counters_are_read_at_scrape_time() -> None:
    box = {"n": 0}

    def source() -> Stats:
        return Stats(media_packets={("srtp", "in"): box["n"]})

    m = Metrics(source)
    assert parse(m.render())["srtpgw_media_packets_total"] == [
        ({"leg_kind": "srtp", "direction": "in"}, 0.0)]
    box["n"] = 12345
    assert parse(m.render())["srtpgw_media_packets_total"][0][1] == 12345.0


def test_every_family_and_label_rendered() -> None:
    s = Stats(
        calls_active={"pbx": 2, "carrier": 1},
        calls_total={("pbx", "answered"): 7, ("pbx", "rejected"): 1},
        sip_requests={("INVITE", "tls"): 9}, sip_messages={"invalid": 4},
        sip_connections={"accepted": 11}, tls_failures={"unknown_ca": 3},
        call_events={"failed.486": 2}, security_events={"pike.ban": 1},
        media_bytes={("rtp", "out"): 1720},
        srtp_auth_failures={"srtp": 5}, srtp_replays={"srtp": 6},
        drops={"acl": 8}, firewall_hits={"pike": 2}, bans_active=1, bans_total=4,
        ports_used=8, ports_total=1000, draining=True, reloads={"ok": 1, "refused": 2},
        cert_expiry={"tls": 1.9e9}, cdr_write_errors=1)
    got = parse(Metrics(lambda: s).render())
    assert ({"trunk": "pbx"}, 2.0) in got["srtpgw_calls_active"]
    assert ({"trunk": "pbx", "outcome": "answered"}, 7.0) in got["srtpgw_calls_total"]
    assert got["srtpgw_sip_requests_total"] == [({"method": "INVITE", "transport": "tls"}, 9.0)]
    assert got["srtpgw_sip_messages_total"] == [({"event": "invalid"}, 4.0)]
    assert got["srtpgw_sip_connections_total"] == [({"event": "accepted"}, 11.0)]
    assert got["srtpgw_call_events_total"] == [({"event": "failed.486"}, 2.0)]
    assert got["srtpgw_security_events_total"] == [({"kind": "pike.ban"}, 1.0)]
    assert got["srtpgw_tls_handshake_failures_total"] == [({"reason": "unknown_ca"}, 3.0)]
    assert got["srtpgw_srtp_auth_failures_total"] == [({"leg_kind": "srtp"}, 5.0)]
    assert got["srtpgw_srtp_replays_total"] == [({"leg_kind": "srtp"}, 6.0)]
    assert got["srtpgw_drops_total"] == [({"cause": "acl"}, 8.0)]
    assert got["srtpgw_firewall_rule_hits_total"] == [({"rule": "pike"}, 2.0)]
    assert got["srtpgw_firewall_bans_active"] == [({}, 1.0)]
    assert got["srtpgw_firewall_bans_total"] == [({}, 4.0)]
    assert got["srtpgw_media_ports_used"] == [({}, 8.0)]
    assert got["srtpgw_media_ports_total"] == [({}, 1000.0)]
    assert got["srtpgw_draining"] == [({}, 1.0)]
    assert ({"result": "refused"}, 2.0) in got["srtpgw_config_reloads_total"]
    assert got["srtpgw_certificate_expiry_timestamp_seconds"] == [({"certificate": "tls"},
                                                                   1.9e9)]
    assert got["srtpgw_cdr_write_errors_total"] == [({}, 1.0)]
    assert got["srtpgw_build_info"][0][0]["version"]
    assert "srtpgw_process_resident_memory_bytes" in got
    assert "srtpgw_event_loop_lag_seconds_count" in got


async def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    m = Metrics(Stats, lag_interval=0.01)
    m.lag.start()
    await asyncio.sleep(0.03)
    time.sleep(0.1)  # block the loop the way a slow callback would
    await asyncio.sleep(0.03)
    await m.lag.stop()
    assert m.lag.last < 0.05
    got = parse(m.render())
    count = got["srtpgw_event_loop_lag_seconds_count"][0][1]
    slow = [v for lbl, v in got["srtpgw_event_loop_lag_seconds_bucket"] if lbl["le"] == "0.05"]
    assert count >= 3 and slow[0] < count  # one observation above 50 ms
