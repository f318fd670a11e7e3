"""A small, tolerant SIP message reader/writer for the test peers (not gateway.sip, on purpose).

It understands what a phone needs to run a dialog: start line, headers (compact forms, folded
lines, repeated and comma-joined values), Content-Length framing on streams, and the few header
fields a UA must interpret (Via, From/To tags, Call-ID, CSeq, Contact, Record-Route).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l":
           "content-length", "c": "content-type", "k": "supported", "s": "subject",
           "e": "content-encoding", "o": "event", "r": "refer-to", "u": "allow-events"}
_MULTI = {"via", "route", "record-route", "contact", "allow", "supported"}
_TAG = re.compile(r";\s*tag=([^;>\s,]+)", re.I)
_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")
_BRANCH = re.compile(r";\s*branch=([^;,\s]+)", re.I)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


class SipParseError(ValueError):
    """The bytes are not a SIP message the test peer can read."""


@dataclass
class SipMessage:
    """A received or built SIP message. Header names keep their wire spelling in ``headers``;
    lookups are case-insensitive and know compact forms."""

    start: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    source: tuple[str, int] | None = None
    transport: str = ""

    # ------------------------------------------------------------------ reading

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else self.cseq[1]

    @property
    def uri(self) -> str:
        return self.start.split(" ")[1]

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1]) if not self.is_request else 0

    @property
    def reason(self) -> str:
        parts = self.start.split(" ", 2)
        return parts[2] if len(parts) > 2 else ""

    def header_all(self, name: str) -> list[str]:
        """Every value of a header, comma-separated lists split for list headers."""
        key = COMPACT.get(name.lower(), name.lower())
        out: list[str] = []
        for n, v in self.headers:
            if COMPACT.get(n.lower(), n.lower()) == key:
                out += _split_commas(v) if key in _MULTI else [v]
        return out

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return bool(self.header_all(name))

    @property
    def call_id(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        value = (self.header("cseq") or "0 ?").split()
        return int(value[0]), value[1].upper() if len(value) > 1 else "?"

    @property
    def from_tag(self) -> str | None:
        m = _TAG.search(_strip_uri(self.header("from") or ""))
        return m.group(1) if m else None

    @property
    def to_tag(self) -> str | None:
        m = _TAG.search(_strip_uri(self.header("to") or ""))
        return m.group(1) if m else None

    @property
    def branch(self) -> str | None:
        via = self.header("via")
        m = _BRANCH.search(via or "")
        return m.group(1) if m else None

    @property
    def contact_uri(self) -> str | None:
        value = self.header("contact")
        return uri_of(value) if value else None

    @property
    def content_type(self) -> str | None:
        value = self.header("content-type")
        return value.split(";")[0].strip().lower() if value else None

    @property
    def sdp(self) -> str | None:
        """The body as text when it is application/sdp."""
        return self.body.decode("latin-1") if self.content_type == "application/sdp" else None

    # ------------------------------------------------------------------ writing

    def add(self, name: str, value: str) -> SipMessage:
        self.headers.append((name, value))
        return self

    def set(self, name: str, value: str) -> SipMessage:
        self.remove(name)
        return self.add(name, value)

    def remove(self, name: str) -> None:
        key = COMPACT.get(name.lower(), name.lower())
        self.headers = [(n, v) for n, v in self.headers
                        if COMPACT.get(n.lower(), n.lower()) != key]

    def to_bytes(self) -> bytes:
        headers = [(n, v) for n, v in self.headers if n.lower() not in ("content-length", "l")]
        lines = [self.start] + [f"{n}: {v}" for n, v in headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __repr__(self) -> str:
        return f"SipMessage({self.start!r}, call_id={self.call_id!r})"


def _split_commas(value: str) -> list[str]:
    """Split a header list on commas outside quotes and angle brackets."""
    out, depth, quoted, cur = [], 0, False, []
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        if ch == "," and not quoted and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _strip_uri(value: str) -> str:
    """Header params only (the URI in <> may carry its own ;tag-like params)."""
    return _URI_IN_BRACKETS.sub("<>", value)


def uri_of(value: str) -> str:
    """The URI in a name-addr (``"Bob" <sip:bob@h>;tag=x``) or addr-spec (``sip:bob@h;tag=x``)."""
    m = _URI_IN_BRACKETS.search(value)
    if m:
        return m.group(1).strip()
    return value.split(";")[0].strip()


def parse_message(data: bytes, source: tuple[str, int] | None = None, transport: str = ""
                  ) -> SipMessage:
    """Parse one complete message (datagram or framed stream chunk)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    text = head.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise SipParseError("empty message")
    start = lines[0].strip()
    if not (start.startswith("SIP/2.0 ") or start.endswith(" SIP/2.0")):
        raise SipParseError(f"not a SIP start line: {start[:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without colon: {line[:60]!r}")
        headers.append((name.strip(), value.strip()))
    msg = SipMessage(start, headers, b"", source, transport)
    length = msg.header("content-length")
    if length is not None and length.strip().isdigit():
        body = body[: int(length)]
    msg.body = body
    return msg


class StreamFramer:
    """Cut a TCP/TLS byte stream into messages by Content-Length; CRLF keep-alives are skipped
    (and counted, so a test can check that pings arrive)."""

    def __init__(self, max_buffer: int = 1 << 20) -> None:
        self.buffer = b""
        self.keepalives = 0
        self.max_buffer = max_buffer

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        if len(self.buffer) > self.max_buffer:
            raise SipParseError("stream buffer overflow")
        out = []
        while True:
            while self.buffer.startswith(b"\r\n"):
                self.buffer = self.buffer[2:]
                self.keepalives += 1
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = self.buffer[:end].decode("utf-8", errors="replace")
            m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)\s*$", head)
            length = int(m.group(1)) if m else 0
            total = end + 4 + length
            if len(self.buffer) < total:
                return out
            out.append(self.buffer[:total])
            self.buffer = self.buffer[total:]
