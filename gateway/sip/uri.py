"""SIP, SIPS and TEL URIs (RFC 3261 §19.1, RFC 3966), and opaque URIs of any other scheme.

Escapes are kept as received: a proxy must forward what it got, and comparison of escaped and
unescaped forms is done on demand (``unescape``). Parameter names are case-insensitive (§19.1.4)
and stored lower-cased; values keep their case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.sip import grammar as g
from gateway.sip.errors import SipParseError

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """Decode %XX escapes (compare escaped URI parts by their decoded form, §19.1.4)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text) if "%" in text else text


@dataclass(slots=True)
class SipUri:
    """``sip:``/``sips:`` (user, password, host, port, params, headers) or ``tel:`` (number in
    ``user``, empty ``host``)."""

    scheme: str
    host: str
    user: str | None = None
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    password: str | None = None

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(self.user or "")
        else:
            if self.user is not None:
                parts.append(self.user)
                if self.password is not None:
                    parts += (":", self.password)
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts += (":", str(self.port))
        for name, value in self.params.items():
            parts += (";", name) if value is None else (";", name, "=", value)
        if self.headers:
            parts += ("?", "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(parts)


@dataclass(slots=True)
class AbsoluteUri:
    """A URI of a scheme SIP does not interpret (RFC 4475 unkscm): kept opaque."""

    scheme: str
    opaque: str

    @property
    def secure(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | AbsoluteUri


def _bad(what: str) -> SipParseError:
    return SipParseError(400, f"malformed URI ({what})")


def _params(text: str, pos: int, params: dict[str, str | None]) -> int:
    n = len(text)
    while pos < n and text[pos] == ";":
        m = g.URI_PARAM_RE.match(text, pos)
        if m is None:
            raise _bad("parameter")
        name, value = m.groups()
        params[name.lower()] = value
        pos = m.end()
    return pos


def parse_uri(text: str) -> Uri:
    """Parse any absolute URI; SIP/SIPS/TEL get full structure. Raises SipParseError(400)."""
    f = g.SIP_URI_FAST_RE.fullmatch(text)
    if f is not None:
        scheme, user, host, port, params = f.groups()
        if port is None or int(port) <= 65535:
            uri = SipUri(scheme, host, user, int(port) if port else None)
            if params:
                for item in params[1:].split(";"):
                    name, eq, value = item.partition("=")
                    uri.params[name.lower()] = value if eq else None
            return uri
    m = g.SCHEME_RE.match(text)
    if m is None:
        raise _bad("scheme")
    scheme = m.group(1).lower()
    rest = text[m.end():]
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        return _parse_tel(rest)
    if not rest or g.URIC_RE.fullmatch(rest) is None:
        raise _bad("opaque part")
    return AbsoluteUri(m.group(1), rest)


def _parse_sip(scheme: str, rest: str) -> SipUri:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, colon, pw = userinfo.partition(":")
        if g.USER_RE.fullmatch(user) is None:
            raise _bad("user")
        if colon:
            if g.PASSWORD_RE.fullmatch(pw) is None:
                raise _bad("password")
            password = pw
    m = g.HOSTPORT_RE.match(rest)
    if m is None:
        raise _bad("host")
    port = None
    if m.group(2) is not None:
        port = int(m.group(2))
        if port > 65535:
            raise _bad("port")
    uri = SipUri(scheme, m.group(1), user, port, password=password)
    pos = _params(rest, m.end(), uri.params)
    if pos < len(rest) and rest[pos] == "?":
        for item in rest[pos + 1:].split("&"):
            h = g.URI_HEADER_RE.fullmatch(item)
            if h is None:
                raise _bad("header")
            uri.headers[h.group(1)] = h.group(2)
        pos = len(rest)
    if pos != len(rest):
        raise _bad("trailing characters")
    return uri


def _parse_tel(rest: str) -> SipUri:
    m = g.TEL_NUMBER_RE.match(rest)
    if m is None:
        raise _bad("telephone number")
    uri = SipUri("tel", "", m.group(0))
    if _params(rest, m.end(), uri.params) != len(rest):
        raise _bad("trailing characters")
    return uri
