"""SIP responses counted by direction, method, status class and transport, read on scrape.

Every label value comes from a small fixed set: a method or transport a peer invented is
counted as ``other``, so a hostile peer cannot grow the metric without bound.
"""

from __future__ import annotations

from collections import Counter

from gateway.sip.errors import SipParseError
from gateway.sip.message import SipResponse

METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK",
                     "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"})
TRANSPORTS = frozenset({"udp", "tcp", "tls"})

Key = tuple[str, str, str, str]  # direction, method, status class, transport


class ResponseCounter:
    """Plain-int counts; one dict update per response, nothing else on the SIP path."""

    def __init__(self) -> None:
        self.counts: Counter[Key] = Counter()

    def count(self, direction: str, response: SipResponse, transport: str) -> None:
        try:
            method = response.cseq.method
        except SipParseError:  # our stateless answer to a request whose CSeq was broken
            method = "other"
        self.counts[(direction, method if method in METHODS else "other",
                     f"{response.status // 100}xx",
                     transport if transport in TRANSPORTS else "other")] += 1

    def sent(self, response: SipResponse) -> None:
        """A response we send goes back the way its request came: the top Via's transport."""
        self.count("sent", response, via_transport(response.headers.get("Via")))


def via_transport(via: str | None) -> str:
    """Lower-cased transport of the first Via value, read straight from its text.

    ``sent-protocol = name SLASH version SLASH transport`` comes first in every Via value, so
    the third slash-separated field's first word is the transport; a full ``parse_via`` of each
    outgoing response's Via cost ~2 % of the gateway's CPU at 300 calls/s. What is not a known
    transport (or no Via at all) reads as ``other``.
    """
    if via is None:
        return "other"
    fields = via.split("/", 2)
    words = fields[2].split(None, 1) if len(fields) == 3 else ()
    transport = words[0].lower() if words else "other"
    return transport if transport in TRANSPORTS else "other"
