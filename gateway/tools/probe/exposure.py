"""Exposure checks: what a stranger learns, and what any answer gives away.

A stranger is the probe without a client certificate on TLS, or sending from
``--stranger-source`` on UDP/TCP. Silence is the best answer to a stranger (README: unknown
sources are dropped); an answer at all tells a scanner there is a SIP service, a distinguishable
one tells it which users exist (the SIPVicious ``svwar`` method), and Server/User-Agent/Warning
headers or home-made reason phrases tell it which product to attack.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from gateway.sdp.errors import SdpError
from gateway.sdp.model import parse_sdp
from gateway.sip.errors import SipParseError
from gateway.sip.message import REASONS, SipMessage, SipResponse
from gateway.tools.probe.findings import Finding, judge, skip
from gateway.tools.probe.sipreq import Exchange

REF_UNKNOWN = "good practice (README: unknown sources dropped); RFC 3261 §26.1.5"
REF_UNAUTH = "RFC 3261 §22, §26.1; toll-fraud good practice"
REF_ENUM = "RFC 3261 §26.1.5 (silence towards strangers); SIPVicious svwar method"
REF_FINGERPRINT = "RFC 3261 §20.35, §20.41, §20.43; topology hiding good practice"
REF_LEAK = "RFC 3261 §26; RFC 5765 (topology hiding)"
_CHALLENGE_OR_REFUSAL = (401, 403, 407)
_IP = re.compile(r"\[?((?:\d{1,3}\.){3}\d{1,3}|[0-9a-fA-F]*:[0-9a-fA-F:]+:[0-9a-fA-F.]*)\]?")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def judge_unknown_source(ex: Exchange | None) -> Finding:
    check = "exposure.unknown_source"
    if ex is None:
        return skip(check, "SHOULD", "no stranger identity (TLS without mutual auth needs no "
                    "flag; UDP/TCP need --stranger-source)", REF_UNKNOWN)
    if not ex.answered:
        return judge(True, check, "SHOULD", "OPTIONS from a stranger: silence"
                     + (f" ({ex.error})" if ex.error else ""), REF_UNKNOWN)
    return judge(False, check, "SHOULD", f"OPTIONS from a stranger answered {ex.describe()}",
                 REF_UNKNOWN)


def judge_unauthenticated(method: str, ex: Exchange | None) -> Finding:
    """INVITE and REGISTER from a stranger must never be served; OPTIONS should not be."""
    check = f"exposure.unauthenticated_{method.lower()}"
    level = "SHOULD" if method == "OPTIONS" else "MUST"
    if ex is None:
        return skip(check, level, "no stranger identity", REF_UNAUTH)  # type: ignore[arg-type]
    ringing = [r for r in ex.responses if 100 < r.status < 200]
    status = ex.status
    ok = not ringing and (status is None or status in _CHALLENGE_OR_REFUSAL)
    if method == "OPTIONS":
        ok = status is None or status in _CHALLENGE_OR_REFUSAL
    what = ex.describe() if ex.answered else "silence" + (f" ({ex.error})" if ex.error else "")
    if ringing and status is None:
        what = f"{ringing[0].status} {ringing[0].reason}"
    return judge(ok, check, level, f"{method} from a stranger: {what}",  # type: ignore[arg-type]
                 REF_UNAUTH)


def signature(ex: Exchange) -> tuple[object, ...]:
    """What a scanner compares between users: statuses, reasons and which headers came."""
    return tuple((r.status, r.reason.lower(), tuple(sorted(
        n for n, _ in r.headers if n not in ("Via", "From", "To", "Call-ID", "CSeq",
                                               "Content-Length")))) for r in ex.responses)


def judge_enumeration(existing: Exchange | None, absent: Sequence[Exchange],
                      extension: str | None) -> Finding:
    check = "exposure.enumeration"
    if existing is None or extension is None:
        return skip(check, "SHOULD", "no --extension given (an existing user to compare "
                    "with random ones)", REF_ENUM)
    if not existing.answered and not any(a.answered for a in absent):
        return judge(True, check, "SHOULD", f"user {extension} and random users: silence",
                     REF_ENUM)
    mine = signature(existing)
    differs = [a for a in absent if signature(a) != mine]
    evidence = (f"user {extension}: {existing.describe()}; random users: "
                + ", ".join(a.describe() for a in absent))
    return judge(not differs, check, "SHOULD", ("distinguishable: " if differs
                                                 else "indistinguishable: ") + evidence,
                 REF_ENUM)


_PRODUCT_HEADERS = ("Server", "User-Agent", "Warning", "X-Serialnumber", "Organization")


def judge_fingerprint(responses: Iterable[SipResponse], own_user_agent: str) -> list[Finding]:
    headers: dict[str, set[str]] = {}
    phrases: set[str] = set()
    for r in responses:
        for name in _PRODUCT_HEADERS:
            for value in r.headers.get_all(name):
                if value and value != own_user_agent:
                    headers.setdefault(name, set()).add(value)
        standard = REASONS.get(r.status)
        if standard is not None and r.reason.strip().lower() != standard.lower():
            phrases.add(f"{r.status} {r.reason}")
    out = [judge(not headers, "exposure.fingerprint_headers", "SHOULD",
                 "; ".join(f"{n}: {', '.join(sorted(v))}" for n, v in sorted(headers.items()))
                 or "no Server, User-Agent or Warning headers in any answer", REF_FINGERPRINT)]
    out.append(judge(not phrases, "exposure.reason_phrases", "SHOULD",
                     ("non-standard: " + "; ".join(sorted(phrases))) if phrases
                     else "every reason phrase is the RFC 3261 one", REF_FINGERPRINT))
    return out


def _internal(text: str, allowed: set[str]) -> list[str]:
    out = []
    for m in _IP.finditer(text):
        try:
            ip = ipaddress.ip_address(m.group(1))
        except ValueError:
            continue
        if str(ip) in allowed:
            continue
        if ip.is_private or ip.is_loopback or ip.is_link_local or (
                ip.version == 4 and ip in _CGNAT):
            out.append(str(ip))
    return out


def addresses_in(msg: SipMessage, skip_via: bool) -> list[tuple[str, str]]:
    """(where, text) pairs of a message that may carry addresses: headers and SDP lines."""
    places = [(name, value) for name, value in msg.headers
              if not (skip_via and name == "Via") and name not in ("Call-ID",)]
    if msg.body and (msg.content_type or "").lower().startswith("application/sdp"):
        try:
            sdp = parse_sdp(msg.body)
        except SdpError:
            return places
        places.append(("SDP o=", str(sdp.origin)))
        for where, conn in [("SDP c=", sdp.connection)] + [
                ("SDP c=", m.connection) for m in sdp.media]:
            if conn is not None:
                places.append((where, str(conn)))
    return places


def judge_leaks(responses: Iterable[SipResponse], allowed: set[str]) -> Finding:
    """Private, loopback and link-local addresses other than the target's and the probe's own."""
    found: dict[str, set[str]] = {}
    for r in responses:
        try:
            for where, text in addresses_in(r, skip_via=True):
                for ip in _internal(text, allowed):
                    found.setdefault(where, set()).add(ip)
        except SipParseError:
            continue
    evidence = "; ".join(f"{w}: {', '.join(sorted(v))}" for w, v in sorted(found.items()))
    return judge(not found, "exposure.internal_addresses", "SHOULD",
                 evidence or "no internal addresses besides the target's own", REF_LEAK)
