"""Counts security events by kind (and TLS failures by reason) for the metrics endpoint.

It is a tap on ``security_event``, so no layer needs a metrics dependency, and it counts every
occurrence, also those the rate limit keeps out of the log: a metric must not undercount a
flood. It only increments counters, so it is cheap enough for one call per attempt.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.ops.log import add_security_tap, remove_security_tap


class SecurityEventCounter:
    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.tls_reasons: Counter[str] = Counter()

    def __call__(self, kind: str, fields: dict[str, Any]) -> None:
        self.kinds[kind] += 1
        if kind == "tls.handshake_failed":
            self.tls_reasons[str(fields.get("reason", "unknown"))] += 1

    def attach(self) -> None:
        add_security_tap(self)

    def detach(self) -> None:
        remove_security_tap(self)
