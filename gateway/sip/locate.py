"""RFC 3263 server location, sans-IO: which SRV name to ask, in which order to try the targets,
and a TTL-honouring cache (time is passed in). The asyncio side is ``resolver.py``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.sip.dns import SrvRecord

_SERVICE = {"tls": "_sips._tcp", "tcp": "_sip._tcp", "udp": "_sip._udp"}
DEFAULT_PORT = {"tls": 5061, "tcp": 5060, "udp": 5060}
NEGATIVE_TTL = 30  # a "no such record" answer without an SOA is believed this long
MAX_TTL = 86400  # a longer TTL is treated as this (RFC 2181 §8 caps at 2^31-1 anyway)


def srv_name(transport: str, domain: str) -> str:
    """RFC 3263 §4.2: the SRV owner name for a transport (TLS is SIPS over TCP)."""
    return f"{_SERVICE[transport]}.{domain.rstrip('.')}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One place to try: a host name (or IP) and port, in failover order."""

    host: str
    port: int


def srv_order(records: Sequence[SrvRecord], rand: Callable[[], float]) -> list[Candidate]:
    """RFC 2782 order: ascending priority; within one priority a weighted random draw without
    replacement (zero weights first in the running sum, so they are picked rarely but can be;
    ``rand`` returns [0, 1)).
    A single record whose target is "." means the service is not offered: no candidates."""
    if len(records) == 1 and records[0].target == "":
        return []
    out: list[Candidate] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority and r.target),
                       key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rand() * total
            running = 0
            chosen = group[-1]
            for r in group:
                running += r.weight
                if running >= pick:
                    chosen = r
                    break
            group.remove(chosen)
            out.append(Candidate(chosen.target, chosen.port))
    return out


class DnsCache:
    """Answers by (name, type) until their TTL runs out; negative answers too."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: dict[tuple[str, int], tuple[float, tuple[object, ...]]] = {}
        self._max = max_entries

    def get(self, name: str, qtype: int, now: float) -> tuple[float, tuple[object, ...]] | None:
        """(expiry, records) while fresh."""
        hit = self._entries.get((name, qtype))
        if hit is None:
            return None
        if hit[0] <= now:
            del self._entries[(name, qtype)]
            return None
        return hit

    def put(self, name: str, qtype: int, records: tuple[object, ...], ttl: float,
            now: float) -> float:
        """Store for ``ttl`` seconds (0: not at all); returns the expiry."""
        if ttl <= 0:
            return now
        if len(self._entries) >= self._max:
            self._entries.clear()
        expires = now + min(ttl, MAX_TTL)
        self._entries[(name, qtype)] = (expires, records)
        return expires
