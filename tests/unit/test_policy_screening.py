"""Screening rules on real parsed requests, and naming of parser refusals."""

from __future__ import annotations

import pytest

from gateway.policy.screening import Screening, parse_rule
from gateway.sip.errors import SipParseError
from gateway.sip.message import SipRequest, parse_message
from tests.security.policy_configs import make_config


def request(method: str = "INVITE", uri: str = "sip:100@gw.example.test",
            extra: str = "", branch: str = "z9hG4bK776asdhds", mf: str | None = "70") -> SipRequest:
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP 10.1.0.1:5070;branch={branch}",
             "From: <sip:alice@pbx.example.test>;tag=1928301774",
             "To: <sip:100@gw.example.test>",
             "Call-ID: a84b4c76e66710@pbx.example.test",
             f"CSeq: 314159 {method}",
             "Contact: <sip:alice@10.1.0.1:5070>"]
    if mf is not None:
        lines.append(f"Max-Forwards: {mf}")
    if extra:
        lines.append(extra)
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, SipRequest)
    return msg


@pytest.fixture
def screen():
    cfg = make_config()
    s = Screening(cfg)
    return lambda req, trunk="pbx": s.screen(req, cfg.trunk(trunk))


def test_clean_request_passes(screen) -> None:
    assert screen(request()) == (None, None)
    assert screen(request(mf=None)) == (None, None)  # RFC 2543 style: tolerated


def test_uri_scheme_416(screen) -> None:
    rej, _ = screen(request(uri="soap.beep://192.0.2.103:3002"))
    assert (rej.rule, rej.status) == ("sanity.uri_scheme", 416)
    assert rej.reason == "Unsupported URI Scheme" and "soap.beep" in rej.detail
    assert screen(request(uri="tel:+15551234567"))[0] is None


def test_max_forwards_zero(screen) -> None:
    rej, _ = screen(request(mf="0"))
    assert (rej.rule, rej.status) == ("sanity.max_forwards", 483)
    assert screen(request("OPTIONS", mf="0"))[0] is None


def test_bare_magic_cookie_branch(screen) -> None:
    rej, _ = screen(request(branch="z9hG4bK"))
    assert (rej.rule, rej.status) == ("sanity.via_branch", 400)


def test_via_hops(screen) -> None:
    vias = "Via: " + ", ".join(f"SIP/2.0/UDP 10.0.0.{i};branch=z9hG4bKx{i}" for i in range(75))
    rej, _ = screen(request(extra=vias))
    assert (rej.rule, rej.status) == ("sanity.size", 483)


def test_method_allow_list_405(screen) -> None:
    rej, _ = screen(request("MESSAGE"), "carrier")
    assert (rej.rule, rej.status) == ("policy.method", 405)
    assert rej.headers == (("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),)
    assert screen(request("INFO"), "pbx")[0] is None


def test_require_420(screen) -> None:
    """The firewall and the B2BUA read one list (gateway.sip.capabilities.SUPPORTED): the
    gateway runs no session timer of its own, so a Require of ``timer`` is refused too."""
    rej, _ = screen(request(extra="Require: nothingSupportsThis, timer"))
    assert (rej.rule, rej.status) == ("policy.require", 420)
    assert rej.headers == (("Unsupported", "nothingSupportsThis, timer"),)


@pytest.mark.parametrize("ua", ["friendly-scanner", "SIPVicious 0.3", "sipcli/v1.8", "pplsip"])
def test_scanner_user_agent_dropped(screen, ua: str) -> None:
    rej, _ = screen(request(extra=f"User-Agent: {ua}"))
    assert (rej.rule, rej.action) == ("policy.user_agent", "drop")


def test_custom_user_agent_patterns() -> None:
    cfg = make_config(firewall={"user_agent_deny": [r"^evil\d+$"]})
    s = Screening(cfg)
    assert s.screen(request(extra="User-Agent: evil42"), cfg.trunk("pbx"))[0].action == "drop"
    assert s.screen(request(extra="User-Agent: friendly-scanner"), cfg.trunk("pbx"))[0] is None
    none = make_config(firewall={"user_agent_deny": []})
    assert Screening(none).screen(request(extra="User-Agent: x"), none.trunk("pbx"))[0] is None


def test_deny_header_reported_not_refused(screen) -> None:
    assert screen(request(extra="X-Internal: secret-topology"), "carrier") == (None, "X-Internal")
    assert screen(request(extra="X-Internal: 1"), "pbx") == (None, None)


@pytest.mark.parametrize(("data", "rule"), [
    (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n",
     "sanity.required_header"),
    (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
     b"To: <sip:a@b>\r\nTo: <sip:c@b>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n",
     "sanity.duplicate_header"),
    (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
     b"To: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n\r\n", "sanity.cseq_method"),
    (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
     b"To: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 99\r\n\r\n",
     "sanity.content_length"),
    (b"OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", "sanity.version"),
    (b"\x00\xff garbage", "sanity.parse"),
])
def test_parser_refusals_are_named(data: bytes, rule: str) -> None:
    with pytest.raises(SipParseError) as exc:
        parse_message(data)
    assert parse_rule(exc.value.status, exc.value.reason) == rule
