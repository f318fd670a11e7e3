"""Screening: named rules run on every parsed request, in the spirit of Kamailio's sanity module.

The SIP parser already refuses what cannot be framed or lacks the fields every layer relies on
(missing Via/From/To/Call-ID/CSeq, duplicated single-value headers, conflicting Content-Length,
CSeq/method mismatch); ``parse_rule`` names those refusals so they are counted like rule hits.
The rules here judge well-formed requests against protocol sanity and the trunk's policy.
A missing Max-Forwards is tolerated: RFC 4475 §3.4.1 asks to accept RFC 2543 style requests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.config import Config, Trunk
from gateway.sip.capabilities import allow, supported
from gateway.sip.message import SipRequest

MAX_VIA = 70  # RFC 3261 §8.1.1.6 recommends Max-Forwards 70: more hops than that is a loop
URI_SCHEMES = frozenset({"sip", "sips", "tel"})
_MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rule's verdict: answer ``status`` with ``headers``, or drop without a word.

    ``reason`` is the standard reason phrase (never text from the request); ``detail`` says
    what was wrong, for the security event.
    """

    rule: str
    status: int
    reason: str
    detail: str = ""
    action: Literal["reject", "drop"] = "reject"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class _Facts:
    """Header facts gathered in one pass, shared by the rules."""

    user_agent: str = ""
    require: tuple[str, ...] = ()
    via_count: int = 0
    denied: str | None = None


Rule = Callable[[SipRequest, Trunk, _Facts], Rejection | None]


def _uri_scheme(req: SipRequest, trunk: Trunk, f: _Facts) -> Rejection | None:
    scheme = req.uri.scheme.lower()
    if scheme in URI_SCHEMES:
        return None
    return Rejection("sanity.uri_scheme", 416, "Unsupported URI Scheme",
                     f"Request-URI scheme {scheme[:16]!r}")


def _max_forwards(req: SipRequest, trunk: Trunk, f: _Facts) -> Rejection | None:
    # An OPTIONS with Max-Forwards 0 is for us (RFC 3261 §11): answered, never forwarded.
    if req.max_forwards == 0 and req.method != "OPTIONS":
        return Rejection("sanity.max_forwards", 483, "Too Many Hops", "Max-Forwards is 0")
    return None


def _via(req: SipRequest, trunk: Trunk, f: _Facts) -> Rejection | None:
    if f.via_count > MAX_VIA:
        return Rejection("sanity.size", 483, "Too Many Hops", f"{f.via_count} Via entries")
    if req.branch == _MAGIC_COOKIE:
        return Rejection("sanity.via_branch", 400, "Bad Request",
                         "Via branch is the bare magic cookie")
    return None


def _method(req: SipRequest, trunk: Trunk, f: _Facts) -> Rejection | None:
    if req.method in trunk.methods:
        return None
    return Rejection("policy.method", 405, "Method Not Allowed",
                     "method not allowed on this trunk",
                     headers=(("Allow", allow(trunk)),))


def _require(req: SipRequest, trunk: Trunk, f: _Facts) -> Rejection | None:
    if not f.require or req.method in ("ACK", "CANCEL"):  # RFC 3261 §8.2.2.3
        return None
    ours = {t.lower() for t in supported(trunk)}
    unknown = [t for t in f.require if t.lower() not in ours]
    if not unknown:
        return None
    return Rejection("policy.require", 420, "Bad Extension", "unsupported extension",
                     headers=(("Unsupported", ", ".join(unknown)),))


RULES: tuple[Rule, ...] = (_uri_scheme, _max_forwards, _via, _method, _require)


class Screening:
    """The rule list for one config: user-agent deny list first (silent), then the RULES."""

    def __init__(self, config: Config) -> None:
        patterns = config.firewall.user_agent_deny
        self._ua_deny = (re.compile("|".join(f"(?:{p})" for p in patterns), re.I)
                         if patterns else None)
        self._deny = {t.name: frozenset(h.lower() for h in t.deny_headers) for t in config.trunks}

    def screen(self, req: SipRequest, trunk: Trunk) -> tuple[Rejection | None, str | None]:
        """The first rejection, if any, and the first deny-listed header present, if any.

        Deny-listed headers are removed by the B2BUA (docs/configuration.md), so they are
        reported for counting, not refused.
        """
        facts = self._facts(req, self._deny.get(trunk.name, frozenset()))
        if self._ua_deny is not None and facts.user_agent and self._ua_deny.search(
                facts.user_agent):
            return (Rejection("policy.user_agent", 0, "", "scanner User-Agent", "drop"),
                    facts.denied)
        for rule in RULES:
            rejection = rule(req, trunk, facts)
            if rejection is not None:
                return rejection, facts.denied
        return None, facts.denied

    @staticmethod
    def _facts(req: SipRequest, deny: frozenset[str]) -> _Facts:
        f = _Facts()
        require: list[str] = []
        for name, value in req.headers:
            low = name.lower()
            if low == "via":
                f.via_count += value.count(",") + 1
            elif low == "user-agent":
                f.user_agent = value
            elif low == "require":
                require.extend(t.strip() for t in value.split(",") if t.strip())
            if deny and f.denied is None and low in deny:
                f.denied = name
        f.require = tuple(require)
        return f


_PARSE_RULES = (
    ("missing ", "sanity.required_header"),
    ("empty via", "sanity.required_header"),
    ("more than one", "sanity.duplicate_header"),
    ("content-length", "sanity.content_length"),
    ("cseq method", "sanity.cseq_method"),
    ("version", "sanity.version"),
    ("too large", "sanity.size"),
    ("too long", "sanity.size"),
    ("too many", "sanity.size"),
)


def parse_rule(status: int, reason: str) -> str:
    """The rule name under which a parser refusal (SipParseError) is counted."""
    low = reason.lower()
    if status == 416:
        return "sanity.uri_scheme"
    for needle, rule in _PARSE_RULES:
        if needle in low:
            return rule
    return "sanity.parse"
