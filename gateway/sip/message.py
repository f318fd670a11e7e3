"""SIP messages: parse bytes into requests/responses and serialize them back (RFC 3261 §7, §25).

``parse_message`` is total: whatever the input, it returns a message or raises ``SipParseError``
with the status a server should answer (400, 413, 414, 505, ...). It validates the fields every
layer above relies on (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact, Content-Length), so
code holding a parsed message can use the typed accessors without further checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.config import SipSection
from gateway.sip import grammar as g
from gateway.sip.errors import SipParseError
from gateway.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from gateway.sip.uri import SipUri, Uri, parse_uri

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 301: "Moved Permanently",
    302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}
_SINGLE = ("call-id", "from", "to", "cseq", "max-forwards")
_DIALOG_METHODS = ("INVITE", "SUBSCRIBE", "REFER", "NOTIFY")
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"  # any octet round-trips through str


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Safe upper bounds for untrusted input (Config.sip)."""

    max_message_size: int = 65535
    max_headers: int = 128
    max_header_line: int = 8192
    max_uri_length: int = 1024

    @classmethod
    def from_config(cls, sip: SipSection) -> ParseLimits:
        return cls(sip.max_message_size, sip.max_headers, sip.max_header_line,
                   sip.max_uri_length)


DEFAULT_LIMITS = ParseLimits()


class SipMessage:
    """What requests and responses share: headers, body and the typed header views."""

    __slots__ = ("_cache", "body", "headers")

    def __init__(self, headers: Headers | None, body: bytes) -> None:
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self._cache: dict[str, tuple[int, Any]] = {}

    def _view(self, key: str, build: Any) -> Any:
        hit = self._cache.get(key)
        gen = self.headers.gen
        if hit is not None and hit[0] == gen:
            return hit[1]
        value = build()
        self._cache[key] = (gen, value)
        return value

    # ----------------------------------------------------------------- typed views
    @property
    def via(self) -> list[Via]:
        return self._view("via", lambda: [parse_via(v) for v in self.headers.values("Via")])

    @property
    def top_via(self) -> Via | None:
        vias = self.via
        return vias[0] if vias else None

    @property
    def branch(self) -> str | None:
        top = self.top_via
        return top.branch if top else None

    @property
    def from_(self) -> NameAddr:
        return self._view("from", lambda: parse_name_addr(self._required("From"), "From"))

    @property
    def to(self) -> NameAddr:
        return self._view("to", lambda: parse_name_addr(self._required("To"), "To"))

    @property
    def call_id(self) -> str:
        return self._required("Call-ID").strip()

    @property
    def cseq(self) -> CSeq:
        return self._view("cseq", lambda: parse_cseq(self._required("CSeq")))

    @property
    def contact(self) -> list[NameAddr]:
        """Contact values; empty for none and for ``Contact: *`` (see ``contact_star``)."""
        return self._view("contact", lambda: [parse_name_addr(v, "Contact")
                                              for v in self.headers.values("Contact")
                                              if v != "*"])

    @property
    def contact_star(self) -> bool:
        return [v.strip() for v in self.headers.get_all("Contact")] == ["*"]

    @property
    def route(self) -> list[NameAddr]:
        return self._view("route", lambda: [parse_name_addr(v, "Route")
                                            for v in self.headers.values("Route")])

    @property
    def record_route(self) -> list[NameAddr]:
        return self._view("rr", lambda: [parse_name_addr(v, "Record-Route")
                                         for v in self.headers.values("Record-Route")])

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else _max_forwards(value)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.strip() if value is not None else None

    @property
    def content_length(self) -> int:
        return len(self.body)

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(400, f"missing {name}")
        return value

    # ----------------------------------------------------------------- writing
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length always states the real body size."""
        lines = [self.start_line()]
        length = str(len(self.body))
        placed = False
        for name, value in self.headers:
            if name == "Content-Length":
                if placed:
                    continue
                value = length
                placed = True
            lines.append(f"{name}: {value}")
        if not placed:
            lines.append(f"Content-Length: {length}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode(_ENCODING, _ERRORS) + self.body


class SipRequest(SipMessage):
    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: Uri, headers: Headers | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri} call-id={self.headers.get('Call-ID')}>"

    def create_response(self, status: int, reason: str | None = None, *,
                        to_tag: str | None = None) -> SipResponse:
        """A response copying Via, From, To, Call-ID and CSeq (§8.2.6.2), plus Record-Route
        when it can establish a dialog (§12.1.1) and Timestamp in a 100 (§8.2.6.1)."""
        headers = Headers()
        copy_rr = 100 < status < 300 and self.method in _DIALOG_METHODS
        for name, value in self.headers:
            if name in ("Via", "From", "Call-ID", "CSeq") or (
                    name == "Record-Route" and copy_rr) or (name == "Timestamp" and status == 100):
                headers.add(name, value)
            elif name == "To":
                if to_tag is not None and status > 100 and self.to.tag is None:
                    value = f"{value};tag={to_tag}"
                headers.add(name, value)
        return SipResponse(status, reason if reason is not None else REASONS.get(status, ""),
                           headers)


class SipResponse(SipMessage):
    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str = "", headers: Headers | None = None,
                 body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<SipResponse {self.status} {self.reason} call-id={self.headers.get('Call-ID')}>"


# --------------------------------------------------------------------------- parsing


def _max_forwards(value: str) -> int:
    value = value.strip()
    if g.DIGITS_RE.fullmatch(value) is None or int(value) > 255:
        raise SipParseError(400, "malformed Max-Forwards")
    return int(value)


def content_length(values: list[str]) -> int | None:
    """The one Content-Length of a message; conflicting or malformed values are a 400."""
    if not values:
        return None
    lengths = set()
    for v in values:
        v = v.strip()
        if g.DIGITS_RE.fullmatch(v) is None:
            raise SipParseError(400, "malformed Content-Length")
        lengths.add(int(v))
    if len(lengths) > 1:
        raise SipParseError(400, "conflicting Content-Length values")
    return lengths.pop()


_FOLD_RE = re.compile(r"[ \t]*\r\n[ \t]+")
# RFC 3261 §25.1: header fields are TEXT-UTF8 and LWS; a control octet other than HTAB appears
# only as a quoted-pair (RFC 4475 §3.1.1.4), CR and LF only as the CRLF that ends a line.
_CTL_RE = re.compile(r"(?<!\\)[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_NAMES: dict[str, tuple[str, str]] = {}  # raw header name -> (canonical, key); bounded


def _header_name(raw: str) -> tuple[str, str]:
    hit = _NAMES.get(raw)
    if hit is not None:
        return hit
    name = raw.rstrip(" \t")
    if not name or g.TOKEN_RE.fullmatch(name) is None:
        raise SipParseError(400, "malformed header line")
    canon = canonical_name(name)
    hit = (canon, canon.lower())
    if len(_NAMES) < 4096:
        _NAMES[raw] = hit
    return hit


def parse_head(head: str, limits: ParseLimits) -> tuple[str, Headers]:
    """Start line and unfolded header fields of a header section (without its final CRLF)."""
    if _CTL_RE.search(head) is not None:
        raise SipParseError(400, "control character in header section")
    if "\r\n " in head or "\r\n\t" in head:
        head = _FOLD_RE.sub(" ", head)
    lines = head.split("\r\n")
    if len(lines) > limits.max_headers + 1:
        raise SipParseError(400, "too many header fields")
    max_line = limits.max_header_line
    items: list[tuple[str, str]] = []
    keys: list[str] = []
    for line in lines:
        if len(line) > max_line:
            raise SipParseError(414 if line is lines[0] and not line.startswith("SIP/") else 400,
                                "line too long")
    for line in lines[1:]:
        raw, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(400, "malformed header line")
        name, key = _header_name(raw)
        items.append((name, value.strip(" \t")))
        keys.append(key)
    return lines[0], Headers._trusted(items, keys)


def parse_message(data: bytes, limits: ParseLimits = DEFAULT_LIMITS, *,
                  stream: bool = False) -> SipRequest | SipResponse:
    """Parse one message. On a datagram the body is Content-Length octets (the rest of the
    datagram when absent, RFC 2543 style) and trailing octets are ignored; on a stream the
    caller has already framed exactly one message and Content-Length is mandatory."""
    try:
        return _parse(data, limits, stream)
    except SipParseError:
        raise
    except (ValueError, IndexError, UnicodeError, RecursionError) as exc:
        raise SipParseError(400, f"unparseable message ({type(exc).__name__})") from None


def _parse(data: bytes, limits: ParseLimits, stream: bool) -> SipRequest | SipResponse:
    if len(data) > limits.max_message_size:
        raise SipParseError(413, "message too large")
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError(400, "incomplete header section")
    first, headers = parse_head(data[start:end].decode(_ENCODING, _ERRORS), limits)
    length = content_length(headers.get_all("Content-Length"))
    body_start = end + 4
    if length is None:
        if stream:
            raise SipParseError(400, "missing Content-Length on a stream")
        body = data[body_start:]
    else:
        if body_start + length > len(data):
            raise SipParseError(400, "Content-Length larger than the message")
        body = data[body_start:body_start + length]
    if first.startswith("SIP/"):
        msg: SipRequest | SipResponse = _response(first, headers, body)
    else:
        msg = _request(first, headers, body, limits)
    _validate(msg)
    return msg


def _version(text: str) -> None:
    if text != "SIP/2.0":
        if g.SIP_VERSION_RE.fullmatch(text):
            raise SipParseError(505, "Version Not Supported")
        raise SipParseError(400, "malformed SIP version")


def _request(line: str, headers: Headers, body: bytes, limits: ParseLimits) -> SipRequest:
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError(400, "malformed Request-Line")
    method, uri_text, version = parts
    if g.METHOD_RE.fullmatch(method) is None:
        raise SipParseError(400, "malformed method")
    _version(version)
    if len(uri_text) > limits.max_uri_length:
        raise SipParseError(414, "Request-URI Too Long")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        raise SipParseError(400, "headers in Request-URI")
    return SipRequest(method, uri, headers, body)


def _response(line: str, headers: Headers, body: bytes) -> SipResponse:
    version, _, rest = line.partition(" ")
    _version(version)
    code, _, reason = rest.partition(" ")
    if g.STATUS_CODE_RE.fullmatch(code) is None:
        raise SipParseError(400, "malformed status code")
    if g.REASON_PHRASE_RE.fullmatch(reason) is None:
        raise SipParseError(400, "malformed reason phrase")
    return SipResponse(int(code), reason, headers, body)


def _validate(msg: SipRequest | SipResponse) -> None:
    """Check every field the layers above rely on, so their typed views cannot fail later.

    Name-addr fields are only checked here (fast path, else the full parser): their typed views
    are built on first use."""
    headers = msg.headers
    keys = headers._keys
    for key in _SINGLE:
        if keys.count(key) > 1:
            raise SipParseError(400, f"more than one {canonical_name(key)}")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name.lower() not in keys:
            raise SipParseError(400, f"missing {name}")
    if not msg.via:
        raise SipParseError(400, "empty Via")
    _check_elements(headers, "Via")
    _check_name_addr(headers.get("From") or "", "From")
    _check_name_addr(headers.get("To") or "", "To")
    if g.CALLID_RE.fullmatch(msg.call_id) is None:
        raise SipParseError(400, "malformed Call-ID")
    cseq = msg.cseq
    if "max-forwards" in keys:
        msg.max_forwards  # noqa: B018 -- parsing is the validation
    for name, key in (("Contact", "contact"), ("Route", "route"),
                      ("Record-Route", "record-route")):
        if key in keys and not (key == "contact" and msg.contact_star):
            for raw in headers.get_all(name):
                elements = split_list(raw)
                if "" in elements:
                    raise SipParseError(400, f"empty element in {name}")
                for value in elements:
                    _check_name_addr(value, name)
    if isinstance(msg, SipRequest) and cseq.method != msg.method:
        raise SipParseError(400, "CSeq method does not match the request method")


def _check_elements(headers: Headers, name: str) -> None:
    """A comma list may not be or have empty elements (``a,,b``, ``a,``): §7.3.1, RFC 4475
    §3.1.2.1."""
    for raw in headers.get_all(name):
        if not raw or ("," in raw and "" in split_list(raw)):
            raise SipParseError(400, f"empty element in {name}")


def _check_name_addr(value: str, what: str) -> None:
    if g.NAME_ADDR_FAST_RE.fullmatch(value) is None:
        parse_name_addr(value, what)


_ANSWER_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")


def error_response(data: bytes, status: int, to_tag: str) -> tuple[SipResponse, Via] | None:
    """Best-effort answer to a request that failed to parse: copies what it can of Via, From,
    To, Call-ID and CSeq as text, with the top Via value parsed: the one part of the request
    that was validated, and so the only one the caller may read (a later Via may be the very
    thing that failed). None when the top Via cannot be read (nowhere to send it), or when the
    message is a response or an ACK (never answered)."""
    try:
        end = data.find(b"\r\n\r\n")
        text = data[: end if end >= 0 else len(data)].decode(_ENCODING, _ERRORS)
        lines = _FOLD_RE.sub(" ", text).lstrip("\r\n").split("\r\n")
        if lines[0].startswith(("SIP/", "ACK ")):
            return None
        found: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = canonical_name(name.strip(" \t"))
            if colon and name in _ANSWER_HEADERS:
                found.setdefault(name, []).append(value.strip(" \t"))
        vias = found.get("Via", [])
        if not vias:
            return None
        top = parse_via(split_list(vias[0])[0])
    except (SipParseError, ValueError, IndexError):
        return None
    headers = Headers()
    for value in vias:
        headers.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        values = found.get(name)
        if values:
            value = values[0]
            if name == "To" and "tag=" not in value.lower():
                value = f"{value};tag={to_tag}"
            headers.add(name, value)
    return SipResponse(status, REASONS.get(status, "Bad Request"), headers), top
