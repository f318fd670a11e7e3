"""Header fields: the ordered, case-insensitive container and typed values (Via, name-addr, CSeq).

Values are kept as received (unfolded) so a message re-serializes to what arrived; typed views
parse on demand and setters write the typed value back as text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gateway.sip import grammar as g
from gateway.sip.errors import SipParseError
from gateway.sip.uri import Uri, parse_uri

# RFC 3261 §7.3.3 and the IANA registry of compact forms.
COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events",
    "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition",
    "x": "Session-Expires", "y": "Identity",
}
_KNOWN = (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After", "Route",
    "RSeq", "Server", "Service-Route", "Session-Expires", "Subject", "Subscription-State",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
)
_CANONICAL = {name.lower(): name for name in _KNOWN}
_CANONICAL.update(COMPACT)


def canonical_name(name: str) -> str:
    """Long, conventionally capitalised form of a header name (unknown names are kept)."""
    return _CANONICAL.get(name.lower(), name)


_KEY_CACHE = {n: n.lower() for n in _CANONICAL.values()}
_KEY_CACHE.update((n.lower(), n.lower()) for n in _CANONICAL.values())
_KEY_CACHE.update((k, v.lower()) for k, v in COMPACT.items())


def _key(name: str) -> str:
    """Lookup key: the lower-cased canonical name."""
    key = _KEY_CACHE.get(name)
    return key if key is not None else canonical_name(name).lower()


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and <...>."""
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [v.strip() for v in value.split(",")]
    out: list[str] = []
    start = 0
    quoted = angle = escaped = False
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            out.append(value[start:i].strip())
            start = i + 1
    if quoted or angle:
        raise SipParseError(400, "unbalanced quotes or angle brackets")
    out.append(value[start:].strip())
    return out


class Headers:
    """Ordered header fields with case-insensitive access by long or compact name."""

    __slots__ = ("_items", "_keys", "gen")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(canonical_name(n), v) for n, v in items]
        self._keys = [n.lower() for n, _ in self._items]
        self.gen = 0  # bumped on every change, so typed views can cache

    @classmethod
    def _trusted(cls, items: list[tuple[str, str]], keys: list[str]) -> Headers:
        h = cls.__new__(cls)
        h._items = items
        h._keys = keys
        h.gen = 0
        return h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        return Headers._trusted(list(self._items), list(self._keys))

    def count(self, name: str) -> int:
        return self._keys.count(_key(name))

    def get(self, name: str, default: str | None = None) -> str | None:
        key = _key(name)
        keys = self._keys
        if key in keys:
            return self._items[keys.index(key)][1]
        return default

    def get_all(self, name: str) -> list[str]:
        """Every field of that name, one entry per header line."""
        key = _key(name)
        keys = self._keys
        n = keys.count(key)
        if n <= 1:
            return [self._items[keys.index(key)][1]] if n else []
        return [item[1] for k, item in zip(keys, self._items, strict=True) if k == key]

    def values(self, name: str) -> list[str]:
        """Every element of a comma-list header (Via, Contact, Route, Allow, ...)."""
        out: list[str] = []
        for v in self.get_all(name):
            out.extend(x for x in split_list(v) if x)
        return out

    def set(self, name: str, value: str) -> None:
        """Replace all fields of that name by one, at the position of the first."""
        name = canonical_name(name)
        key = name.lower()
        keys = self._keys
        if key not in keys:
            self._items.append((name, value))
            keys.append(key)
        else:
            first = keys.index(key)
            self._items[first] = (name, value)
            for i in range(len(keys) - 1, first, -1):
                if keys[i] == key:
                    del keys[i], self._items[i]
        self.gen += 1

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a field; ``first=True`` puts it before any field of the same name."""
        name = canonical_name(name)
        key = name.lower()
        self.gen += 1
        if first and key in self._keys:
            i = self._keys.index(key)
            self._items.insert(i, (name, value))
            self._keys.insert(i, key)
            return
        self._items.append((name, value))
        self._keys.append(key)

    def remove(self, name: str) -> int:
        """Drop every field of that name; returns how many were removed."""
        key = _key(name)
        keep = [i for i, k in enumerate(self._keys) if k != key]
        removed = len(self._keys) - len(keep)
        self._items = [self._items[i] for i in keep]
        self._keys = [self._keys[i] for i in keep]
        self.gen += 1
        return removed

    def replace_first(self, name: str, value: str) -> bool:
        """Replace the value of the first field of that name in place; False if there is none."""
        key = _key(name)
        if key not in self._keys:
            return False
        i = self._keys.index(key)
        self._items[i] = (self._items[i][0], value)
        self.gen += 1
        return True

    def remove_first(self, name: str) -> str | None:
        """Drop the first field of that name (e.g. our own top Via); returns its value."""
        key = _key(name)
        if key not in self._keys:
            return None
        i = self._keys.index(key)
        del self._keys[i]
        self.gen += 1
        return self._items.pop(i)[1]


# --------------------------------------------------------------------------- parameters


def parse_params(text: str, pos: int, what: str) -> dict[str, str | None]:
    """``*( SEMI generic-param )`` from ``pos`` to the end of ``text``; names lower-cased."""
    params: dict[str, str | None] = {}
    if g.FAST_PARAMS_RE.fullmatch(text, pos):
        for item in text[pos + 1:].split(";") if pos < len(text) else ():
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
        return params
    return _parse_params_lws(text, pos, what)


def _parse_params_lws(text: str, pos: int, what: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    n = len(text)
    while pos < n:
        m = g.GENERIC_PARAM_RE.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise SipParseError(400, f"malformed {what} parameters")
            break
        name, value = m.groups()
        params[name.lower()] = value
        pos = m.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# --------------------------------------------------------------------------- Via


@dataclass(slots=True)
class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...;received=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport_requested(self) -> bool:
        """RFC 3581: the client asked for ``rport`` (with or without a value)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def __str__(self) -> str:
        hp = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {hp}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    m = g.VIA_PARM_RE.match(text)
    if m is None:
        raise SipParseError(400, "malformed Via")
    name, version, transport, host, port_text = m.groups()
    port = _port(port_text, "Via")
    params = parse_params(text, m.end(), "Via")
    rport = params.get("rport")
    if rport is not None and not (rport.isdigit() and 0 < int(rport) <= 65535):
        raise SipParseError(400, "malformed Via rport")
    received = params.get("received")
    if received is not None:
        # RFC 5118 §4.5: an IPv6 received comes with or without brackets
        bracketed = received[:1] == "[" and received[-1:] == "]"
        addr = received[1:-1] if bracketed else received
        if not ((":" in addr and g.IPV6_RE.fullmatch(addr))
                or (not bracketed and g.IPV4_RE.fullmatch(addr))):
            raise SipParseError(400, "malformed Via received")
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


def _port(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    port = int(text)
    if port > 65535:
        raise SipParseError(400, f"{what} port out of range")
    return port


# --------------------------------------------------------------------------- name-addr


def _unquote(text: str) -> str:
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out = []
    it = iter(inner)
    for ch in it:
        out.append(next(it, "") if ch == "\\" else ch)
    return "".join(out)


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(slots=True)
class NameAddr:
    """``[display-name] <uri>;params`` (From, To, Contact, Route, Record-Route, ...).

    ``display`` is the decoded display name (quotes and escapes removed)."""

    uri: Uri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        name = f"{quote(self.display)} " if self.display else ""
        return f"{name}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str, what: str) -> NameAddr:
    """name-addr or addr-spec, followed by header parameters."""
    text = text.strip()
    if "<" in text or text.startswith('"'):
        m = g.NAME_ADDR_RE.match(text)
        if m is None:
            raise SipParseError(400, f"malformed {what}")
        raw, uri_text = m.groups()
        raw = raw.strip()
        display = _unquote(raw) if raw.startswith('"') else (raw or None)
        uri = parse_uri(uri_text)
        return NameAddr(uri, display, parse_params(text, m.end(), what))
    spec, _, _ = text.partition(";")
    spec = spec.rstrip()
    if not spec or "?" in spec or " " in spec or "\t" in spec:
        raise SipParseError(400, f"malformed {what} (addr-spec)")
    return NameAddr(parse_uri(spec), None, parse_params(text, len(spec), what))


# --------------------------------------------------------------------------- CSeq


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    m = g.CSEQ_RE.fullmatch(text.strip())
    if m is None:
        raise SipParseError(400, "malformed CSeq")
    number = int(m.group(1))
    if number > 0xFFFFFFFF:
        raise SipParseError(400, "CSeq number out of range")
    return CSeq(number, m.group(2))

