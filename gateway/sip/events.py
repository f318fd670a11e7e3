"""Events the sans-IO transaction layer hands to its user (the stack), one small dataclass each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.sip.message import SipRequest, SipResponse

# A transaction id: ("s" | "c", branch-or-RFC-2543-key..., method); opaque to users.
Tid = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes to put on the wire towards ``dest`` (whatever the caller passed in as address)."""

    data: bytes
    dest: Any


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the TU. ``tid`` is None for an ACK, which has no server transaction."""

    tid: Tid | None
    request: SipRequest
    source: Any


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for client transaction ``tid`` (None: a stray, e.g. a retransmitted 2xx)."""

    tid: Tid | None
    response: SipResponse
    source: Any


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL matched INVITE server transaction ``tid``; it has already been answered 200."""

    tid: Tid
    request: SipRequest
    source: Any = None


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Client transaction ``tid`` got no final response (timer B or F)."""

    tid: Tid


@dataclass(frozen=True, slots=True)
class AckTimeout:
    """INVITE server transaction ``tid`` sent a final response that was never ACKed (timer H,
    or 64*T1 of 2xx retransmissions): the dialog should be torn down."""

    tid: Tid


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported that a message of ``tid`` could not be sent."""

    tid: Tid


@dataclass(frozen=True, slots=True)
class Terminated:
    """Transaction ``tid`` is gone; its state can be forgotten."""

    tid: Tid


Event = (RequestReceived | ResponseReceived | CancelReceived | TimedOut | AckTimeout
         | TransportFailed | Terminated)
