"""Counts security events by kind (and TLS failures by reason) for the metrics endpoint.

It is a sink on the ``srtpgw.security`` logger, the documented attachment point for security
consumers, so no layer needs a metrics dependency. Events are already rate-limited at their
source, so this never runs per packet.
"""

from __future__ import annotations

import logging
from collections import Counter

from gateway.ops.log import ROOT


class SecurityEventCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.kinds: Counter[str] = Counter()
        self.tls_reasons: Counter[str] = Counter()
        self._logger = logging.getLogger(f"{ROOT}.security")

    def emit(self, record: logging.LogRecord) -> None:
        kind = str(record.msg)
        self.kinds[kind] += 1
        if kind == "tls.handshake_failed":
            fields = getattr(record, "fields", None) or {}
            self.tls_reasons[str(fields.get("reason", "unknown"))] += 1

    def attach(self) -> None:
        if self not in self._logger.handlers:
            self._logger.addHandler(self)

    def detach(self) -> None:
        self._logger.removeHandler(self)
