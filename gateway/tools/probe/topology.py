"""Topology hiding: marked values sent into one side of the target, looked for on the other.

The secure-side INVITE carries a mark in Call-ID, From tag, Subject, an ``X-Probe-Mark`` header
and SDP o=/s= lines; the legacy side answers with its own mark in To tag, Contact, an
``X-Probe-Mark`` header and SDP o=/s=. A B2BUA that hides topology lets none of them cross, nor
our SDES key, nor the legacy side's addresses. Caller and callee user parts are not marked: they
are the call's numbers and cross by design.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from gateway.sdp.errors import SdpError
from gateway.sdp.model import parse_sdp
from gateway.sip.message import SipMessage
from gateway.tools.probe.findings import Finding, judge, skip

REF = "RFC 5765 §2 (topology hiding); RFC 3323; RFC 3261 §16.6"
REF_KEYS = "3GPP TS 33.210 Annex C.2; RFC 4568 §8 (keys per hop)"


def marked_places(msg: SipMessage, needles: Iterable[str]) -> list[str]:
    """Where in a message (header names, SDP line types) any of the needles appears."""
    wanted = [n for n in needles if n]
    places: list[str] = []
    if any(w in str(msg.start_line()) for w in wanted):  # type: ignore[attr-defined]
        places.append("Request-URI")
    for name, value in msg.headers:
        if any(w in value for w in wanted) and name not in places:
            places.append(name)
    if msg.body:
        try:
            sdp = parse_sdp(msg.body)
        except SdpError:
            if any(w.encode() in msg.body for w in wanted):
                places.append("body")
            return places
        for line in sdp.to_text().splitlines():
            if any(w in line for w in wanted):
                kind = "SDP " + line.split(":", 1)[0][:12]
                if kind not in places:
                    places.append(kind)
    return places


def judge_topology(mark: str, legacy_mark: str, legacy_invite: SipMessage | None,
                   secure_answer: SipMessage | None, legacy_addresses: Iterable[str],
                   our_keys: Iterable[bytes]) -> list[Finding]:
    if legacy_invite is None:
        why = "the target never called the legacy side" if secure_answer is not None \
            else "no call through the target"
        return [skip(c, "SHOULD", why, REF) for c in (
            "topology.secure_to_legacy", "topology.legacy_to_secure", "topology.addresses")] + [
            skip("topology.key_passthrough", "MUST", why, REF_KEYS)]
    out = []
    crossed = marked_places(legacy_invite, [mark])
    out.append(judge(not crossed, "topology.secure_to_legacy", "SHOULD",
                     ("marked values crossed into the legacy INVITE: " + ", ".join(crossed))
                     if crossed else "no marked value reached the legacy side", REF))
    if secure_answer is None:
        out.append(skip("topology.legacy_to_secure", "SHOULD", "no answer on the secure side",
                        REF))
        out.append(skip("topology.addresses", "SHOULD", "no answer on the secure side", REF))
    else:
        back = marked_places(secure_answer, [legacy_mark])
        out.append(judge(not back, "topology.legacy_to_secure", "SHOULD",
                         ("legacy marks in the secure-side answer: " + ", ".join(back))
                         if back else "no legacy mark in the secure-side answer", REF))
        addrs = sorted(set(legacy_addresses))
        leaked = marked_places(secure_answer, addrs)
        out.append(judge(not leaked, "topology.addresses", "SHOULD",
                         (f"legacy-side address ({', '.join(addrs)}) in: " + ", ".join(leaked))
                         if leaked else "no legacy-side address on the secure side", REF))
    encoded = [base64.b64encode(k).decode() for k in our_keys]
    passed = marked_places(legacy_invite, encoded) if encoded else []
    out.append(judge(not passed, "topology.key_passthrough", "MUST",
                     "our SDES key reached the legacy side" if passed
                     else "the legacy side never saw our key", REF_KEYS))
    return out
