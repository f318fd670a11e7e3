"""Stream framing (RFC 3261 §18.3) and CRLF keep-alives (RFC 5626 §3.5.1), sans-IO.

Bytes from a TCP/TLS connection go in at any split; whole messages (header section plus exactly
Content-Length body octets) come out, together with keep-alive pings (CRLFCRLF) and pongs (CRLF).
A framing error is unrecoverable on a stream (the next message boundary is unknown), so the
caller answers if it can and closes the connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip.errors import SipParseError
from gateway.sip.message import ParseLimits, content_length

PING = b"\r\n\r\n"
PONG = b"\r\n"
_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I)
_FOLD = re.compile(rb"[ \t]*\r\n[ \t]+")  # LWS (§25.1): read folded values as the parser does


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A CRLFCRLF ping (answer it with PONG) or a CRLF pong."""

    ping: bool


class StreamFramer:
    """Cuts a byte stream into SIP messages.

    ``expect_pong`` is for connections we opened: a lone CRLF is then the peer's pong. On a
    listener a lone CRLF waits for the next octets, since it may be half of a ping.
    """

    def __init__(self, limits: ParseLimits, max_buffer: int, *, expect_pong: bool = False) -> None:
        self._buf = bytearray()
        self._limits = limits
        self._max_buffer = max_buffer
        self._expect_pong = expect_pong
        self._body_needed = 0  # total length of the message whose body is still arriving

    @property
    def partial(self) -> bool:
        """True while a message has started but not completed (the slow-loris clock runs).

        A lone CRLF (a keep-alive some UAs send, or half a ping) is not a message."""
        if self._body_needed:
            return True
        buf = self._buf
        return bool(buf) and not (len(buf) <= 3 and buf[:2] == b"\r\n")

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def pending(self) -> bytes:
        """The unframed octets (to salvage enough of a bad message to answer it)."""
        return bytes(self._buf)

    def feed(self, data: bytes) -> list[bytes | Keepalive]:
        """Add octets; return every complete message and keep-alive now available."""
        buf = self._buf
        buf += data
        if len(buf) > self._max_buffer:
            raise SipParseError(413, "connection buffer limit exceeded")
        out: list[bytes | Keepalive] = []
        while buf:
            if self._body_needed:
                if len(buf) < self._body_needed:
                    break
                out.append(bytes(buf[:self._body_needed]))
                del buf[:self._body_needed]
                self._body_needed = 0
                continue
            if buf[:2] == b"\r\n":
                if buf[:4] == PING:
                    out.append(Keepalive(ping=True))
                    del buf[:4]
                    continue
                n = len(buf)
                if (n >= 4 or (n == 3 and buf[2] != 13)  # 13: CR, maybe the rest of a ping
                        or (n == 2 and self._expect_pong)):
                    out.append(Keepalive(ping=False))
                    del buf[:2]
                    continue
                break
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._limits.max_message_size:
                    raise SipParseError(413, "header section too large")
                break
            head = bytes(buf[:end + 2])
            if b"\r\n " in head or b"\r\n\t" in head:
                head = _FOLD.sub(b" ", head)
            length = content_length([v.decode("latin-1") for v in _LENGTH.findall(head)])
            if length is None:
                raise SipParseError(400, "missing Content-Length on a stream")
            total = end + 4 + length
            if total > self._limits.max_message_size:
                raise SipParseError(413, "message too large")
            self._body_needed = total
        return out
