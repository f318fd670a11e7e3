"""SDP session descriptions (RFC 4566): a tolerant-but-bounded parser and a faithful serializer.

The model keeps every line it does not interpret, in its original order, so an SDP that passes
through the gateway loses nothing but what the offer/answer code removes on purpose. Text is
decoded as Latin-1, which maps bytes 1:1, so ``parse_sdp(x).to_bytes()`` reproduces any valid
input (modulo CRLF normalisation and the canonical RFC 4566 line order).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

from gateway.ops.log import redact_text
from gateway.sdp import grammar
from gateway.sdp.errors import bad

MAX_BYTES = 32768
MAX_LINES = 512
MAX_LINE_LENGTH = 4096
MAX_MEDIA = 16
MAX_FORMATS = 64

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# Session-level line types in RFC 4566 §5 order; c= sits between p= and b=.
_SESSION_BEFORE_C = "iuep"


@dataclass(slots=True)
class Origin:
    """``o=``: who made the description and its version, bumped on every changed re-offer."""

    username: str
    sess_id: str
    sess_version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    def clone(self) -> Origin:
        return Origin(self.username, self.sess_id, self.sess_version, self.address, self.nettype,
                      self.addrtype)

    def __str__(self) -> str:
        return (f"{self.username} {self.sess_id} {self.sess_version} {self.nettype} "
                f"{self.addrtype} {self.address}")


@dataclass(slots=True)
class Connection:
    """``c=``: where media goes. ``0.0.0.0`` is the RFC 2543 way of putting a call on hold."""

    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"
    suffix: str = ""  # "/ttl[/count]" of a multicast address, kept verbatim

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls(address, "IN", "IP6" if ":" in address else "IP4")

    def clone(self) -> Connection:
        return Connection(self.address, self.nettype, self.addrtype, self.suffix)

    @property
    def is_hold(self) -> bool:
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}{self.suffix}"


@dataclass(slots=True, repr=False)
class Attribute:
    """``a=name[:value]``; ``value`` is None for a property attribute such as ``a=rtcp-mux``."""

    name: str
    value: str | None = None

    def clone(self) -> Attribute:
        return Attribute(self.name, self.value)

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"

    def __repr__(self) -> str:
        return f"Attribute({redact_text(str(self))!r})"


class _Attributes:
    """Lookup helpers shared by the session and media levels (names compare case-sensitively,
    as RFC 4566 says attribute names are)."""

    attributes: list[Attribute]

    def get(self, name: str) -> str | None:
        """Value of the first ``a=name`` ("" for a property attribute), or None if absent."""
        for a in self.attributes:
            if a.name == name:
                return "" if a.value is None else a.value
        return None

    def get_all(self, name: str) -> list[str]:
        return ["" if a.value is None else a.value for a in self.attributes if a.name == name]

    def has(self, name: str) -> bool:
        return any(a.name == name for a in self.attributes)

    def remove(self, *names: str) -> None:
        self.attributes[:] = [a for a in self.attributes if a.name not in names]

    def add(self, name: str, value: str | None = None) -> None:
        self.attributes.append(Attribute(name, value))

    @property
    def direction(self) -> str | None:
        """The last direction attribute present, or None (meaning the other level's / sendrecv)."""
        found = None
        for a in self.attributes:
            if a.name in DIRECTIONS:
                found = a.name
        return found

    def set_direction(self, direction: str | None) -> None:
        """Put ``direction`` where the first direction attribute was (else at the end); None
        removes them all. Other attributes keep their order."""
        kept = [a for a in self.attributes if a.name not in DIRECTIONS]
        if direction is not None:
            first = next((i for i, a in enumerate(self.attributes) if a.name in DIRECTIONS),
                         len(self.attributes))
            kept.insert(sum(1 for a in self.attributes[:first] if a.name not in DIRECTIONS),
                        Attribute(direction))
        self.attributes[:] = kept


@dataclass(slots=True, repr=False)
class Media(_Attributes):
    """One ``m=`` section. ``port == 0`` marks a rejected or disabled stream (RFC 3264 §6)."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)  # i=, b=, k= ... verbatim
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.port == 0

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def rtcp_mux(self) -> bool:
        return self.has("rtcp-mux")

    @property
    def rtcp(self) -> tuple[int, str | None] | None:
        """RFC 3605 ``a=rtcp``: (port, address or None), or None when absent."""
        value = self.get("rtcp")
        if value is None:
            return None
        m = grammar.RTCP.fullmatch(value)
        if m is None or int(m.group(1)) > 65535:
            raise bad("malformed a=rtcp")
        return int(m.group(1)), m.group(4)

    @property
    def ptime(self) -> float | None:
        value = self.get("ptime")
        if value is None:
            return None
        if not grammar.PTIME.fullmatch(value.strip()):
            raise bad("malformed a=ptime")
        return float(value)

    @property
    def rtpmap(self) -> dict[str, tuple[str, int, str | None]]:
        """Payload type -> (encoding name, clock rate, encoding params); malformed lines skipped."""
        out: dict[str, tuple[str, int, str | None]] = {}
        for value in self.get_all("rtpmap"):
            m = grammar.RTPMAP.fullmatch(value.strip())
            if m:
                out[m.group(1)] = (m.group(2), int(m.group(3)), m.group(4))
        return out

    @property
    def fmtp(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for value in self.get_all("fmtp"):
            m = grammar.FMTP.fullmatch(value)
            if m:
                out[m.group(1)] = m.group(2)
        return out

    def clone(self) -> Media:
        """A copy sharing only immutable values (str, int, line tuples); see
        ``SessionDescription.clone``."""
        c = self.connection
        return Media(self.kind, self.port, self.proto, list(self.formats), self.port_count,
                     None if c is None else c.clone(), list(self.lines),
                     [a.clone() for a in self.attributes])

    def __repr__(self) -> str:
        return f"Media({self.mline()!r}, {len(self.attributes)} attributes)"

    def mline(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.kind, port, self.proto, *self.formats])


@dataclass(slots=True, repr=False)
class SessionDescription(_Attributes):
    """A whole SDP body. ``lines`` holds session-level i/u/e/p/b/t/r/z/k... lines verbatim."""

    origin: Origin
    name: str = "-"
    connection: Connection | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    def connection_for(self, media: Media) -> Connection | None:
        """The connection that applies to a stream: its own, else the session's."""
        return media.connection or self.connection

    def direction_for(self, media: Media) -> str:
        """Effective direction of a stream (media level wins, default sendrecv), with an
        RFC 2543 hold (c=0.0.0.0) read as sendonly-from-the-holder, i.e. ``sendonly``."""
        direction = media.direction or self.direction or "sendrecv"
        conn = self.connection_for(media)
        if conn is not None and conn.is_hold and direction == "sendrecv":
            return "sendonly"
        return direction

    def clone(self) -> SessionDescription:
        """A copy that shares only immutable values (str, int, line tuples), so changing it or
        anything in it never changes ``self`` -- what ``copy.deepcopy`` guaranteed, at a
        fraction of its cost (deepcopy walks every str and int through its memo)."""
        c = self.connection
        return SessionDescription(self.origin.clone(), self.name,
                                  None if c is None else c.clone(), list(self.lines),
                                  [a.clone() for a in self.attributes],
                                  [m.clone() for m in self.media])

    def __repr__(self) -> str:
        return (f"SessionDescription(o={str(self.origin)!r}, "
                f"media={[m.mline() for m in self.media]!r})")

    def to_text(self) -> str:
        out = ["v=0", f"o={self.origin}", f"s={self.name}"]
        out += [f"{t}={v}" for t, v in self.lines if t in _SESSION_BEFORE_C]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{t}={v}" for t, v in self.lines if t not in _SESSION_BEFORE_C]
        out += [f"a={a}" for a in self.attributes]
        for m in self.media:
            out.append(f"m={m.mline()}")
            out += [f"{t}={v}" for t, v in m.lines if t == "i"]
            if m.connection is not None:
                out.append(f"c={m.connection}")
            out += [f"{t}={v}" for t, v in m.lines if t != "i"]
            out += [f"a={a}" for a in m.attributes]
        return "\r\n".join(out) + "\r\n"

    def to_bytes(self) -> bytes:
        return self.to_text().encode("latin-1")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _parse_connection(value: str) -> Connection:
    m = grammar.CONNECTION.fullmatch(value)
    if m is None:
        raise bad("malformed c= line")
    nettype, addrtype, address, suffix = m.group(1), m.group(2), m.group(3), m.group(4) or ""
    if nettype == "IN" and addrtype in ("IP4", "IP6"):
        version = _ip_version(address)
        if version is None:
            raise bad("c= address is not an IP literal")
        if (version == 4) != (addrtype == "IP4"):
            raise bad("c= address family does not match its addrtype")
    return Connection(address, nettype, addrtype, suffix)


@functools.lru_cache(maxsize=1024)
def _ip_version(address: str) -> int | None:
    """4 or 6 for an IP literal, else None. Cached: a gateway parses the same few peer
    addresses in every call's SDP (bounded, as peers choose what goes in)."""
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None


def _parse_origin(value: str) -> Origin:
    m = grammar.ORIGIN.fullmatch(value)
    if m is None:
        raise bad("malformed o= line")
    return Origin(m.group(1), m.group(2), int(m.group(3)), m.group(6), m.group(4), m.group(5))


def _parse_media(value: str) -> Media:
    m = grammar.MEDIA.fullmatch(value)
    if m is None:
        raise bad("malformed m= line")
    port = int(m.group(2))
    count = int(m.group(3)) if m.group(3) is not None else None
    if port > 65535 or (count is not None and not 1 <= count <= 65535):
        raise bad("m= port out of range")
    formats = m.group(5).split()
    if not formats:
        raise bad("m= line without formats")
    if len(formats) > MAX_FORMATS:
        raise bad("too many formats on an m= line")
    return Media(m.group(1), port, m.group(4), formats, count)


def _parse_attribute(value: str) -> Attribute:
    m = grammar.ATTRIBUTE.fullmatch(value)
    if m is None:
        raise bad("malformed a= line")
    return Attribute(m.group(1), m.group(2))


def _split_lines(data: bytes | str) -> list[str]:
    if isinstance(data, str):
        try:
            data = data.encode("latin-1")
        except UnicodeEncodeError:
            raise bad("SDP text has characters outside 8 bits") from None
    if len(data) > MAX_BYTES:
        raise bad(f"SDP larger than {MAX_BYTES} bytes")
    if b"\x00" in data:
        raise bad("NUL byte in SDP")
    text = data.decode("latin-1")
    raw = text.split("\n")
    if len(raw) > MAX_LINES + 1:
        raise bad(f"SDP has more than {MAX_LINES} lines")
    lines = []
    for line in raw:
        line = line.removesuffix("\r").rstrip(" \t")  # trailing blanks: a common phone bug
        if not line:
            continue
        if len(line) > MAX_LINE_LENGTH:
            raise bad("SDP line too long")
        lines.append(line)
    return lines


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raise ``SdpError(400, ...)`` on anything malformed or oversized."""
    lines = _split_lines(data)
    if not lines or not lines[0].startswith("v=") or not grammar.VERSION.fullmatch(lines[0][2:]):
        raise bad("SDP must start with v=0")
    origin: Origin | None = None
    session = None
    current: Media | SessionDescription | None = None
    name = None
    pending_lines: list[tuple[str, str]] = []
    pending_attrs: list[Attribute] = []
    pending_conn: Connection | None = None
    for line in lines[1:]:
        m = grammar.LINE.fullmatch(line)
        if m is None:
            raise bad("SDP line is not <letter>=<value>")
        kind, value = m.group(1), m.group(2)
        if kind == "v":
            raise bad("repeated v= line")
        if session is None and kind != "m":
            if kind == "o":
                if origin is not None:
                    raise bad("repeated o= line")
                origin = _parse_origin(value)
            elif kind == "s":
                if name is not None:
                    raise bad("repeated s= line")
                name = value
            elif kind == "c":
                if pending_conn is not None:
                    raise bad("repeated session-level c= line")
                pending_conn = _parse_connection(value)
            elif kind == "a":
                pending_attrs.append(_parse_attribute(value))
            else:
                pending_lines.append((kind, value))
            continue
        if session is None:
            if origin is None:
                raise bad("SDP has no o= line")
            session = SessionDescription(origin, name if name is not None else "-",
                                         pending_conn, pending_lines, pending_attrs)
        if kind == "m":
            if len(session.media) >= MAX_MEDIA:
                raise bad(f"SDP has more than {MAX_MEDIA} m= lines")
            current = _parse_media(value)
            session.media.append(current)
        elif kind in "os":
            raise bad(f"{kind}= line inside a media section")
        elif kind == "c":
            assert isinstance(current, Media)
            if current.connection is not None:
                raise bad("repeated media-level c= line")
            current.connection = _parse_connection(value)
        elif kind == "a":
            assert current is not None
            current.attributes.append(_parse_attribute(value))
        else:
            assert current is not None
            current.lines.append((kind, value))
    if session is None:
        if origin is None:
            raise bad("SDP has no o= line")
        session = SessionDescription(origin, name if name is not None else "-",
                                     pending_conn, pending_lines, pending_attrs)
    for media in session.media:
        if not media.rejected and media.is_rtp and session.connection_for(media) is None:
            raise bad("active stream without a c= line")
        _validate(media)
    return session


def _validate(media: Media) -> None:
    """Check the attributes that properties interpret, so reading them later cannot fail."""
    for value in media.get_all("rtcp"):
        m = grammar.RTCP.fullmatch(value)
        if m is None or int(m.group(1)) > 65535:
            raise bad("malformed a=rtcp")
    for value in media.get_all("ptime"):
        if not grammar.PTIME.fullmatch(value.strip()):
            raise bad("malformed a=ptime")
