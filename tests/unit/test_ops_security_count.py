"""Security events counted by kind through the srtpgw.security logger."""

from __future__ import annotations

from gateway.ops.log import security_event
from gateway.ops.security_count import SecurityEventCounter


def test_counts_kinds_and_tls_reasons() -> None:
    c = SecurityEventCounter()
    c.attach()
    c.attach()  # idempotent: one handler, one count per event
    try:
        security_event("pike.ban", source="192.0.2.1")
        security_event("tls.handshake_failed", peer="192.0.2.1:5061", reason="unknown ca")
        security_event("tls.handshake_failed", peer="192.0.2.1:5061", reason="unknown ca")
        security_event("tls.handshake_failed", peer="192.0.2.1:5061")
    finally:
        c.detach()
    security_event("pike.ban", source="192.0.2.1")  # detached: not counted
    assert c.kinds == {"pike.ban": 1, "tls.handshake_failed": 3}
    assert c.tls_reasons == {"unknown ca": 2, "unknown": 1}
