"""Rate limiting of security events: one per source and kind per interval, with the count of
those held back, and at most ``per_kind`` per kind per interval whatever the number of sources.

Sans-IO (``now`` is passed in) and bounded: a flood of attempts, or a spray from many spoofed
addresses, yields a bounded number of log lines and a bounded table.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

DEFAULT_INTERVAL = 60.0
PER_KIND = 100
MAX_SOURCES = 65536


class EventLimiter:
    """Decides which security events are written; every occurrence is counted either way."""

    def __init__(self, interval: float = DEFAULT_INTERVAL, per_kind: int = PER_KIND,
                 max_sources: int = MAX_SOURCES) -> None:
        self.interval = interval
        self.per_kind = per_kind
        self.max_sources = max_sources
        self._seen: OrderedDict[tuple[str, str], list[float]] = OrderedDict()  # [since, held]
        self._budget: dict[str, list[float]] = {}  # kind -> [since, written]
        self.suppressed: Counter[str] = Counter()  # by kind, since start

    def admit(self, kind: str, source: str | None, now: float) -> int | None:
        """None: hold this event back. Otherwise write it, with the returned number of events
        of this kind from this source held back since the last one written."""
        key = (kind, source) if source is not None else None
        seen = self._seen.get(key) if key is not None else None
        if seen is not None and 0 <= now - seen[0] < self.interval:
            seen[1] += 1
            self.suppressed[kind] += 1
            return None
        budget = self._budget.get(kind)
        if budget is None or not 0 <= now - budget[0] < self.interval:
            budget = self._budget[kind] = [now, 0]
        if budget[1] >= self.per_kind:
            self.suppressed[kind] += 1
            return None
        budget[1] += 1
        held = int(seen[1]) if seen is not None else 0
        if key is not None:
            self._seen.pop(key, None)
            if len(self._seen) >= self.max_sources:
                self._seen.popitem(last=False)
            self._seen[key] = [now, 0]
        return held

    def configure(self, interval: float) -> None:
        self.interval = interval

    def __len__(self) -> int:
        return len(self._seen)


def source_of(fields: dict[str, object]) -> str | None:
    """The address an event is about: ``source`` or ``peer``, without a port."""
    value = fields.get("source", fields.get("peer"))
    if not isinstance(value, str) or not value:
        return None
    if value.startswith("["):  # [v6]:port
        return value[1:].split("]", 1)[0]
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:  # v4:port or name:port, not a bare v6
        return host
    return value
