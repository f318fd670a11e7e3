"""Pike-style flood detector: a source that sends more than ``max_requests`` within ``window``
seconds is banned for ``ban_time`` seconds.

The rate is estimated over a sliding window (the previous fixed window weighted by its overlap
plus the current one), so a burst straddling a window edge cannot pass at twice the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import PikeSection
from gateway.policy.bounded import BoundedTable


class _Window:
    __slots__ = ("count", "prev", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.prev = 0


@dataclass(frozen=True, slots=True)
class Ban:
    ip: str
    since: float
    until: float
    reason: str


class Pike:
    """Counts messages per source address and keeps the ban list, both bounded."""

    def __init__(self, settings: PikeSection, max_sources: int = 65536,
                 max_bans: int = 65536) -> None:
        self.settings = settings
        self._windows: BoundedTable[str, _Window] = BoundedTable(max_sources)
        self._bans: BoundedTable[str, Ban] = BoundedTable(max_bans)

    def banned(self, ip: str, now: float) -> bool:
        ban = self._bans.get(ip)
        if ban is None:
            return False
        if now >= ban.until:
            self._bans.pop(ip)
            return False
        return True

    def hit(self, ip: str, now: float) -> Ban | None:
        """Count one message from ``ip``; return the new Ban when this one crosses the limit."""
        s = self.settings
        if not s.enabled:
            return None
        w = self._windows.get(ip)
        if w is None:
            w = _Window(now)
            self._windows.put(ip, w)
        else:
            self._windows.touch(ip)
        elapsed = now - w.start
        if elapsed >= s.window:
            periods = int(elapsed // s.window)
            w.prev = w.count if periods == 1 else 0
            w.count = 0
            w.start += periods * s.window
            elapsed = now - w.start
        w.count += 1
        estimate = w.prev * (1.0 - elapsed / s.window) + w.count
        if estimate <= s.max_requests:
            return None
        return self.ban(ip, now, s.ban_time, "pike")

    def ban(self, ip: str, now: float, duration: float, reason: str) -> Ban:
        """Ban ``ip`` (also used by operators and other detectors)."""
        ban = Ban(ip, now, now + duration, reason)
        self._bans.put(ip, ban)
        self._windows.pop(ip)
        return ban

    def unban(self, ip: str) -> bool:
        return self._bans.pop(ip) is not None

    def bans(self, now: float) -> list[Ban]:
        return [b for _, b in self._bans.items() if b.until > now]

    def reload(self, settings: PikeSection) -> None:
        self.settings = settings

    @property
    def tracked(self) -> int:
        return len(self._windows)
