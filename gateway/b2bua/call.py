"""The call model: two independent dialogs (legs) and one media session.

Leg A faces the caller (we are its UAS), leg B the callee (we are its UAC). Each leg carries its
own RFC 3261 §12 dialog state: our Call-ID, tags and CSeq on leg B are fresh random values, so
nothing of one leg's identifiers can be derived from the other's.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field

from gateway.config import HostPort, Trunk


def new_token(nbytes: int = 12) -> str:
    """A random, unguessable identifier for Call-IDs and tags."""
    return secrets.token_hex(nbytes)


class CallState(enum.Enum):
    INVITING = "inviting"      # INVITE sent on leg B, no provisional yet
    EARLY = "early"            # 18x seen on leg B, relayed to A
    ANSWERED = "answered"      # 2xx relayed to A, waiting for the caller's ACK
    CONFIRMED = "confirmed"    # both legs confirmed
    ENDING = "ending"          # BYE/CANCEL in progress
    ENDED = "ended"


class EndReason(enum.Enum):
    CALLER_BYE = "caller_bye"
    CALLEE_BYE = "callee_bye"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    MEDIA_TIMEOUT = "media_timeout"
    SESSION_EXPIRED = "session_expired"
    NO_ACK = "no_ack"
    ERROR = "error"
    SHUTDOWN = "shutdown"


@dataclass(slots=True)
class LegMedia:
    """What one leg's media negotiated, for CDRs and status: the first codec of the answer
    and the SRTP suite (None on plain RTP). Never a key: there is no field that could hold one.
    """

    codec: str | None = None
    suite: str | None = None


@dataclass(slots=True)
class Leg:
    """One side's dialog. ``local_*`` are ours on this leg, ``remote_*`` the peer's."""

    trunk: Trunk
    call_id: str
    local_tag: str
    local_uri: str                    # our From (leg B) or To (leg A) name-addr, without tag
    remote_uri: str
    peer: HostPort                    # where requests on this leg are sent
    contact: str                      # our Contact URI on this leg
    remote_tag: str | None = None
    remote_target: str | None = None  # the peer's Contact URI
    route_set: tuple[str, ...] = ()
    local_cseq: int = 0
    remote_cseq: int | None = None
    media: LegMedia = field(default_factory=LegMedia)   # filled by the call's MediaBridge
    # The TCP/TLS connection the peer's dialog requests arrive on: our requests on this leg go
    # there while it is open (a phone without a TLS server has no other way in); ``peer`` is
    # where to connect once it has closed.
    connection: int | None = None

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq


@dataclass(slots=True)
class Call:
    """A call as the B2BUA tracks it; ``other(leg)`` answers "where does this go"."""

    id: str
    a: Leg
    b: Leg
    created: float
    last_activity: float
    state: CallState = CallState.INVITING
    media_session: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: EndReason | None = None
    final_status: int | None = None  # the final response the caller got to its INVITE
    reinvite_pending: bool = False   # an offer/answer exchange in progress (glare -> 491)

    def other(self, leg: Leg) -> Leg:
        return self.b if leg is self.a else self.a

    def touch(self, now: float) -> None:
        self.last_activity = now

    @property
    def active(self) -> bool:
        return self.state not in (CallState.ENDING, CallState.ENDED)


def expired(calls: list[Call], now: float, session_expires: float) -> list[Call]:
    """Calls with no signalling activity for longer than ``session_expires`` seconds."""
    return [c for c in calls if c.active and now - c.last_activity > session_expires]
