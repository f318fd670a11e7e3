"""Typed errors of the SIP layer: parsing, transactions and transports."""

from __future__ import annotations


class SipError(Exception):
    """Base of every error the SIP layer raises on purpose."""


class SipParseError(SipError):
    """A message (or part of one) that cannot be accepted.

    ``status`` is the response a server should send when it can answer at all (400, 413, 414,
    416, 505, ...); ``reason`` says what was wrong, never echoing secrets from the message.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class TransactionTimeout(SipError):
    """A client transaction got no final response in time (timer B or F)."""


class TransportFailure(SipError):
    """A message could not be delivered: connect refused, TLS failure, connection lost."""
