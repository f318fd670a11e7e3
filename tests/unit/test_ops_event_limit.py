"""The security event rate limit: one per source and kind per interval with the held-back count,
a per-kind budget against spoofed sprays, every occurrence still seen by the taps."""

from __future__ import annotations

import io
import json

from gateway.ops.event_limit import EventLimiter, source_of
from gateway.ops.log import security_event, security_events_suppressed
from gateway.ops.security_count import SecurityEventCounter
from gateway.policy.events import attach_siem, detach_siem


def test_once_per_source_and_kind_per_interval_with_held_count() -> None:
    lim = EventLimiter(interval=10, per_kind=100)
    assert lim.admit("tls.handshake_failed", "192.0.2.1", 0.0) == 0
    assert all(lim.admit("tls.handshake_failed", "192.0.2.1", 0.1 * i) is None
               for i in range(1, 50))
    assert lim.admit("sip.connection_limit", "192.0.2.1", 1.0) == 0  # another kind
    assert lim.admit("tls.handshake_failed", "192.0.2.2", 1.0) == 0  # another source
    assert lim.admit("tls.handshake_failed", "192.0.2.1", 10.0) == 49
    assert lim.suppressed["tls.handshake_failed"] == 49


def test_per_kind_budget_caps_a_spray_of_sources_and_the_table_is_bounded() -> None:
    lim = EventLimiter(interval=60, per_kind=100, max_sources=500)
    written = sum(lim.admit("sip.connection_limit", f"10.0.{i // 256}.{i % 256}", 1.0) is not None
                  for i in range(20_000))
    assert written == 100 and len(lim) <= 500
    assert lim.admit("sip.connection_limit", "10.9.9.9", 61.0) == 0  # a new interval


def test_events_without_source_are_limited_per_kind_only() -> None:
    lim = EventLimiter(interval=60, per_kind=3)
    assert [lim.admit("dtls.failed", None, 0.0) for _ in range(5)] == [0, 0, 0, None, None]


def test_source_of_drops_the_port() -> None:
    assert source_of({"peer": "192.0.2.1:5061"}) == "192.0.2.1"
    assert source_of({"peer": "[2001:db8::1]:5061"}) == "2001:db8::1"
    assert source_of({"source": "2001:db8::1"}) == "2001:db8::1"
    assert source_of({"source": "127.0.0.9:4000", "peer": "x"}) == "127.0.0.9"
    assert source_of({"call_id": "c"}) is None and source_of({"source": None}) is None


def test_security_event_writes_one_counts_all() -> None:
    """10k connection-limit hits from one source: one SIEM line, 10k in the metric."""
    buf = io.StringIO()
    sink = attach_siem(stream=buf)
    counter = SecurityEventCounter()
    counter.attach()
    try:
        for i in range(10_000):
            security_event("sip.connection_limit", peer=f"192.0.2.7:{1024 + i % 60000}",
                           listener="tls", limit=64)
    finally:
        counter.detach()
        detach_siem(sink)
    docs = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [d["kind"] for d in docs] == ["sip.connection_limit"]
    assert docs[0]["suppressed"] == 0
    assert counter.kinds["sip.connection_limit"] == 10_000
    assert security_events_suppressed()["sip.connection_limit"] == 9_999
