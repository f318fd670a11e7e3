"""The gateway's own Allow and Supported, per leg, from one list (issue 13 items 6 and 7)."""

from __future__ import annotations

import dataclasses

from gateway.config import HostPort, Trunk
from gateway.sip.capabilities import allow, allowed_methods, capability_headers


def trunk(**kw: object) -> Trunk:
    base = Trunk(name="t", side="legacy", transport="udp", peer=HostPort("127.0.0.1", 5070),
                 listener="udp", media="rtp")
    return dataclasses.replace(base, **kw)


def test_allow_is_what_is_handled_and_the_trunk_permits() -> None:
    t = trunk()  # default methods include PRACK and REFER, which the gateway does not do
    assert allow(t) == "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, NOTIFY"
    with_message = trunk(methods=(*t.methods, "MESSAGE"))
    assert "MESSAGE" in allowed_methods(with_message)
    assert "MESSAGE" not in allowed_methods(with_message, t)  # relayed: the far leg refuses it
    assert allowed_methods(trunk(methods=("INVITE", "ACK", "BYE", "INFO"))) == (
        "INVITE", "ACK", "BYE", "INFO")


def test_no_supported_header_while_no_option_tag_is_implemented() -> None:
    assert capability_headers(trunk()) == [("Allow", allow(trunk()))]
