"""Token buckets for new dialogs and out-of-dialog requests, per source and per trunk.

Only requests that start something (a dialog or an out-of-dialog transaction) draw tokens, so
in-dialog requests of established calls are never starved by a flood from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.config import RateLimit, Trunk
from gateway.policy.bounded import BoundedTable

Kind = Literal["new_dialog", "out_of_dialog"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst``; starts full."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def retry_after(self, cost: float = 1.0) -> float:
        """Seconds until ``cost`` tokens are back."""
        missing = cost - self.tokens
        return 0.0 if missing <= 0 else missing / self.rate


@dataclass(frozen=True, slots=True)
class Limited:
    """Why a request was refused: which bucket, and when to come back."""

    scope: Literal["source", "trunk"]
    kind: Kind
    retry_after: float


class RateLimiter:
    """Per-(trunk, source, kind) and per-trunk buckets in bounded tables."""

    def __init__(self, max_sources: int = 65536) -> None:
        self._sources: BoundedTable[tuple[str, str, Kind], TokenBucket] = BoundedTable(
            max_sources)
        self._trunks: dict[str, TokenBucket] = {}

    def check(self, trunk: Trunk, ip: str, kind: Kind, now: float) -> Limited | None:
        """Draw one token for this request; None when it may proceed."""
        rl = trunk.rate_limit
        key = (trunk.name, ip, kind)
        bucket = self._sources.get(key)
        if bucket is None:
            rate, burst = _source_params(rl, kind)
            bucket = TokenBucket(rate, burst, now)
            self._sources.put(key, bucket)
        else:
            self._sources.touch(key)
        if not bucket.take(now):
            return Limited("source", kind, bucket.retry_after())
        if kind == "new_dialog":
            tb = self._trunks.get(trunk.name)
            if tb is None:
                tb = self._trunks[trunk.name] = TokenBucket(
                    rl.new_dialogs_per_trunk, rl.new_dialogs_trunk_burst, now)
            if not tb.take(now):
                bucket.tokens = min(bucket.burst, bucket.tokens + 1)
                return Limited("trunk", kind, tb.retry_after())
        return None

    def reload(self, trunks: tuple[Trunk, ...]) -> None:
        """Forget buckets of changed or removed trunks so new limits apply at once."""
        current = {t.name: t.rate_limit for t in trunks}
        self._trunks = {name: b for name, b in self._trunks.items()
                        if name in current and _same_trunk_params(b, current[name])}
        for key, b in self._sources.items():
            rl = current.get(key[0])
            if rl is None or (b.rate, b.burst) != _source_params(rl, key[2]):
                self._sources.pop(key)

    def __len__(self) -> int:
        return len(self._sources)


def _source_params(rl: RateLimit, kind: Kind) -> tuple[float, float]:
    if kind == "new_dialog":
        return rl.new_dialogs_per_source, rl.new_dialogs_burst
    return rl.out_of_dialog_per_source, rl.out_of_dialog_burst


def _same_trunk_params(b: TokenBucket, rl: RateLimit) -> bool:
    return (b.rate, b.burst) == (rl.new_dialogs_per_trunk, rl.new_dialogs_trunk_burst)


class CallSlots:
    """Concurrent-call cap per trunk (Trunk.max_calls) for the B2BUA to hold while a call lives."""

    def __init__(self) -> None:
        self._active: dict[str, int] = {}

    def acquire(self, trunk: Trunk) -> bool:
        n = self._active.get(trunk.name, 0)
        if n >= trunk.max_calls:
            return False
        self._active[trunk.name] = n + 1
        return True

    def release(self, trunk: Trunk) -> None:
        n = self._active.get(trunk.name, 0)
        if n <= 1:
            self._active.pop(trunk.name, None)
        else:
            self._active[trunk.name] = n - 1

    def active(self, trunk_name: str) -> int:
        return self._active.get(trunk_name, 0)
