"""The one error type of the SDP layer, carrying the SIP status the B2BUA should answer with."""

from __future__ import annotations


class SdpError(Exception):
    """Bad or unacceptable SDP.

    ``status`` is 400 when the body is malformed and 488 (Not Acceptable Here) when it is well
    formed but offers nothing this leg's policy can accept. ``reason`` is safe to log: it never
    contains key material. ``warning`` is the RFC 3261 §20.43 warn-code a 488 carries (399
    miscellaneous, 301 incompatible network address formats, 305 incompatible media format).
    """

    def __init__(self, status: int, reason: str, warning: int | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.warning = warning if warning is not None else (399 if status == 488 else None)


def bad(reason: str) -> SdpError:
    """A malformed-SDP error (400)."""
    return SdpError(400, reason)


def unacceptable(reason: str, warning: int = 399) -> SdpError:
    """A well-formed but unacceptable SDP (488)."""
    return SdpError(488, reason, warning)
