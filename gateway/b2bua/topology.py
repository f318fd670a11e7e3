"""Topology hiding: which headers of one leg may be copied onto the other.

The B2BUA builds every routing header (Via, Route, Record-Route, Contact, From, To, Call-ID, CSeq,
Max-Forwards) per leg itself, and states its own Allow and Supported (gateway.sip.capabilities);
nothing else crosses unless the source trunk's ``pass_headers`` allows it and neither trunk
denies it. P-Asserted-Identity crosses only from a trusted trunk, and then only its user part
(the host becomes our domain). 100rel is never offered on either leg, so it is stripped from a
Require that a trunk lets through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.config import Trunk

Header = tuple[str, str]

# RFC 3261 §7.3.3 and later RFCs' compact forms.
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
    "o": "event", "r": "refer-to", "b": "referred-by", "x": "session-expires",
    "u": "allow-events", "y": "identity", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition",
}

# Built per leg by the B2BUA; a copy would leak addresses, ids or the other leg's dialog state.
OWN_HEADERS = frozenset({
    "via", "route", "record-route", "contact", "from", "to", "call-id", "cseq", "max-forwards",
    "content-length", "content-type", "content-encoding", "user-agent", "server", "rseq", "rack",
    "p-preferred-identity", "path", "service-route", "allow", "supported",
})


def canonical(name: str) -> str:
    """Lower-case long form of a header name."""
    low = name.strip().lower()
    return COMPACT.get(low, low)


def option_tags(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def without_tags(value: str, drop: Iterable[str]) -> str:
    """A comma list (option tags, methods) minus some entries, compared case-insensitively."""
    gone = {d.lower() for d in drop}
    return ", ".join(t for t in option_tags(value) if t.lower() not in gone)


def unsupported_required(headers: Iterable[Header], supported: Iterable[str]) -> list[str]:
    """Option tags in Require that we do not support (RFC 3261 §8.2.2.3, answered with 420)."""
    ok = {s.lower() for s in supported}
    out: list[str] = []
    for n, v in headers:
        if canonical(n) == "require":
            out.extend(t for t in option_tags(v) if t.lower() not in ok)
    return out


_URI_IN_ANGLES = re.compile(r"<\s*(sips?|tel):([^>]*)>", re.I)
_BARE_URI = re.compile(r"^\s*(sips?|tel):([^;\s]*)", re.I)


def identity_user(value: str) -> tuple[str, str] | None:
    """(scheme, user) of a name-addr/addr-spec such as a P-Asserted-Identity value."""
    m = _URI_IN_ANGLES.search(value) or _BARE_URI.search(value)
    if not m:
        return None
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme == "tel":
        return scheme, rest.split(";", 1)[0]
    if "@" not in rest:
        return None
    return scheme, rest.split("@", 1)[0].split(";", 1)[0]


def rewrite_identity(value: str, domain: str) -> str | None:
    """A P-Asserted-Identity value re-homed to our domain; only the user part survives."""
    found = identity_user(value)
    if found is None:
        return None
    scheme, user = found
    if scheme == "tel":
        return f"<tel:{user}>"
    if not user:
        return None
    return f"<{scheme}:{user}@{domain}>"


def copy_headers(headers: Iterable[Header], src: Trunk, dst: Trunk, domain: str) -> list[Header]:
    """The headers of a message from ``src`` that may appear on the leg towards ``dst``."""
    allowed = {h.lower() for h in src.pass_headers}
    denied = {h.lower() for h in src.deny_headers} | {h.lower() for h in dst.deny_headers}
    out: list[Header] = []
    for name, value in headers:
        key = canonical(name)
        if key in OWN_HEADERS or key in denied:
            continue
        if key == "p-asserted-identity":
            if src.trusted:
                ident = rewrite_identity(value, domain)
                if ident is not None:
                    out.append(("P-Asserted-Identity", ident))
            continue
        if key not in allowed:
            continue
        if key == "require":
            value = without_tags(value, ("100rel",))
            if not value:
                continue
        out.append((name if len(name) > 1 else key.title(), value))
    return out


def agent_header(user_agent: str | None, *, request: bool) -> list[Header]:
    """Our own User-Agent (requests) or Server (responses), or nothing at all."""
    if not user_agent:
        return []
    return [("User-Agent" if request else "Server", user_agent)]
