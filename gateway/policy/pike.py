"""Pike-style flood detector: a source that sends more than ``max_requests`` within ``window``
seconds is banned for ``ban_time`` seconds.

Counts and bans are kept per scope (the firewall uses ``listener/transport``), so a flood on
one listener bans the address there only: spoofed UDP carrying a carrier's address must not
black out the carrier's mutual-TLS trunk on another listener. A ban with no scope (an
operator's) applies everywhere.

The rate is estimated over a sliding window (the previous fixed window weighted by its overlap
plus the current one), so a burst straddling a window edge cannot pass at twice the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import PikeSection
from gateway.policy.bounded import BoundedTable

_Key = tuple[str | None, str]  # (scope, ip)


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
    scope: str | None = None  # where the ban applies; None: on every listener


class Pike:
    """Counts messages per (scope, source address) and keeps the ban list, both bounded."""

    def __init__(self, settings: PikeSection, max_sources: int = 65536,
                 max_bans: int = 65536) -> None:
        self.settings = settings
        self._windows: BoundedTable[_Key, _Window] = BoundedTable(max_sources)
        self._bans: BoundedTable[_Key, Ban] = BoundedTable(max_bans)

    def banned(self, ip: str, now: float, scope: str | None = None) -> bool:
        """Banned in ``scope`` (or everywhere)."""
        return self._active((None, ip), now) or (
            scope is not None and self._active((scope, ip), now))

    def _active(self, key: _Key, now: float) -> bool:
        ban = self._bans.get(key)
        if ban is None:
            return False
        if now >= ban.until:
            self._bans.pop(key)
            return False
        return True

    def hit(self, ip: str, now: float, scope: str | None = None,
            settings: PikeSection | None = None) -> Ban | None:
        """Count one message from ``ip`` in ``scope`` (with ``settings`` instead of the global
        ones, for a trunk with its own limits); return the new Ban when this one crosses the
        limit. A source already banned is not counted again, so it is banned once."""
        s = settings or self.settings
        if not s.enabled or self.banned(ip, now, scope):
            return None
        key = (scope, ip)
        w = self._windows.get(key)
        if w is None:
            w = _Window(now)
            self._windows.put(key, w)
        else:
            self._windows.touch(key)
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
        return self.ban(ip, now, s.ban_time, "pike", scope)

    def ban(self, ip: str, now: float, duration: float, reason: str,
            scope: str | None = None) -> Ban:
        """Ban ``ip`` in ``scope`` (also used by operators and other detectors)."""
        ban = Ban(ip, now, now + duration, reason, scope)
        self._bans.put((scope, ip), ban)
        self._windows.pop((scope, ip))
        return ban

    def unban(self, ip: str) -> bool:
        """Lift every ban on ``ip``, whatever its scope."""
        keys = [k for k, _ in self._bans.items() if k[1] == ip]
        for k in keys:
            self._bans.pop(k)
        return bool(keys)

    def bans(self, now: float) -> list[Ban]:
        return [b for _, b in self._bans.items() if b.until > now]

    def reload(self, settings: PikeSection) -> None:
        self.settings = settings

    @property
    def tracked(self) -> int:
        return len(self._windows)
