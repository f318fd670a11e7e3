"""Media policy: what SRTP a trunk accepts, and when SRTP failures become a security event.

The B2BUA calls ``check_media`` with plain data taken from an offer or answer (so this module
needs no SDP parser) and ``SrtpWatch.report`` with the relay's per-leg counters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import Trunk
from gateway.ops.log import security_event
from gateway.policy.bounded import BoundedTable

PLAIN_PROTOS = frozenset({"RTP/AVP", "RTP/AVPF"})
SDES_PROTOS = frozenset({"RTP/SAVP", "RTP/SAVPF"})
DTLS_PROTOS = frozenset({"UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF"})


@dataclass(frozen=True, slots=True)
class MediaStream:
    """One m= line as the policy sees it: transport protocol, offered SDES suites, DTLS."""

    proto: str
    crypto_suites: tuple[str, ...] = ()
    fingerprint: bool = False
    port: int = 1


@dataclass(frozen=True, slots=True)
class MediaDecision:
    """Accepted with the usable suites per stream (offer order), or refused with 488."""

    ok: bool
    reason: str = ""
    suites: tuple[tuple[str, ...], ...] = ()
    status: int = 488


def check_media(trunk: Trunk, streams: Sequence[MediaStream]) -> MediaDecision:
    """Does this SDP, received from or about to go to ``trunk``, meet the trunk's media policy?

    A secure trunk never gets plain RTP: every active stream must be SRTP (SDES with a suite
    from ``trunk.suites``, or DTLS-SRTP with a fingerprint) as the trunk's media setting says.
    """
    active = [s for s in streams if s.port != 0]
    if not active:
        return MediaDecision(False, "no active media stream")
    chosen: list[tuple[str, ...]] = []
    for s in active:
        proto = s.proto.upper()
        allowed = tuple(x for x in s.crypto_suites if x in trunk.suites)
        if trunk.media == "dtls-srtp":
            if proto not in DTLS_PROTOS:
                return MediaDecision(False, f"trunk requires DTLS-SRTP, got {s.proto}")
            if not s.fingerprint:
                return MediaDecision(False, "DTLS-SRTP stream without a=fingerprint")
            chosen.append(())
        elif trunk.media == "srtp" or (trunk.media == "srtp-optional" and trunk.secure):
            if proto not in SDES_PROTOS:
                return MediaDecision(False, f"trunk requires SRTP (SDES), got {s.proto}")
            if not allowed:
                return MediaDecision(False, _no_suite(s, trunk))
            chosen.append(allowed)
        elif trunk.media == "srtp-optional":
            if s.crypto_suites and not allowed and proto in SDES_PROTOS:
                return MediaDecision(False, _no_suite(s, trunk))
            chosen.append(allowed)
        else:
            if proto not in PLAIN_PROTOS and not (proto in SDES_PROTOS and allowed):
                return MediaDecision(False, f"trunk uses plain RTP, got {s.proto}")
            chosen.append(allowed)
    return MediaDecision(True, suites=tuple(chosen))


def _no_suite(s: MediaStream, trunk: Trunk) -> str:
    offered = ", ".join(s.crypto_suites) or "none"
    return f"no acceptable SRTP suite (offered {offered}; allowed {', '.join(trunk.suites)})"


@dataclass(slots=True)
class _Seen:
    reported: int = 0


class SrtpWatch:
    """Turns the relay's per-leg SRTP auth-failure and replay counters into security events.

    An event fires when a leg's failures first reach the threshold and again at every further
    multiple of it, so a sustained attack stays visible without one event per packet.
    """

    def __init__(self, threshold: int, max_legs: int = 65536) -> None:
        self.threshold = threshold
        self._legs: BoundedTable[tuple[str, str], _Seen] = BoundedTable(max_legs)
        self.events = 0

    def report(self, call_id: str, leg: str, trunk: str, auth_failures: int, replays: int,
               source: str | None = None) -> bool:
        """Feed the current totals for one leg; True when an event was emitted."""
        total = auth_failures + replays
        key = (call_id, leg)
        seen = self._legs.get(key)
        level = total // self.threshold
        if level <= (seen.reported if seen is not None else 0):
            return False
        if seen is None:  # only legs that raised an event are kept: forget() scans them all
            seen = _Seen()
            self._legs.put(key, seen)
        seen.reported = level
        self.events += 1
        security_event("srtp.auth_failures", call_id=call_id, leg=leg, trunk=trunk,
                       auth_failures=auth_failures, replays=replays, threshold=self.threshold,
                       source=source)
        return True

    def report_session(self, call_id: str, trunks: tuple[str, str], stats: Any) -> int:
        """Feed a relay ``SessionStats`` (``legs[leg][stream]``) for one call; events emitted."""
        emitted = 0
        for leg, streams in enumerate(stats.legs):
            for index, s in enumerate(streams):
                failed = s.failed_source  # the failing packet's source, not the latched peer
                source = f"{failed[0]}:{failed[1]}" if failed else None
                emitted += self.report(call_id, f"{leg}.{index}", trunks[leg], s.auth_failures,
                                       s.replays, source)
        return emitted

    def forget(self, call_id: str) -> None:
        for key, _ in self._legs.items():
            if key[0] == call_id:
                self._legs.pop(key)
