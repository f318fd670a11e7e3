"""The probe's scope: one explicit endpoint, never a range; every send counted and bounded."""

from __future__ import annotations

import pytest

from gateway.cli import main
from gateway.tools.probe.target import (
    BudgetExceeded,
    Guard,
    ScopeError,
    parse_endpoint,
    parse_host,
    parse_local,
)


def no_dns(name: str) -> list[str]:
    return {"sbc.example": ["192.0.2.7"], "rr.example": ["192.0.2.7", "192.0.2.8"]}.get(name, [])


@pytest.mark.parametrize(("text", "want"), [
    ("tls:127.0.0.1:5061", ("127.0.0.1", 5061, "tls", None)),
    ("udp:[::1]:5060", ("::1", 5060, "udp", None)),
    ("sips:127.0.0.1:5061", ("127.0.0.1", 5061, "tls", None)),
    ("sip:10.0.0.1:5080;transport=tcp", ("10.0.0.1", 5080, "tcp", None)),
    ("sip:10.0.0.1:5080", ("10.0.0.1", 5080, "udp", None)),
    ("tls:sbc.example:5061", ("192.0.2.7", 5061, "tls", "sbc.example")),
])
def test_explicit_targets_parse(text: str, want: tuple[object, ...]) -> None:
    ep = parse_endpoint(text, resolve=no_dns)
    assert (ep.host, ep.port, ep.transport, ep.name) == want


@pytest.mark.parametrize(("text", "why"), [
    ("tls:127.0.0.0/8:5061", "ranges"), ("udp:10.0.0.1-20:5060", "ranges"),
    ("udp:*:5060", "ranges"), ("udp:10.0.0.1,10.0.0.2:5060", "one host"),
    ("sip:127.0.0.1", "no port"), ("127.0.0.1", "TRANSPORT:HOST:PORT"),
    ("udp:0.0.0.0:5060", "unicast"), ("udp:224.0.0.1:5060", "unicast"),
    ("udp:255.255.255.255:5060", "unicast"), ("tls:rr.example:5061", "2 addresses"),
    ("tls:nowhere.example:5061", "0 addresses"), ("udp:127.0.0.1:70000", "out of range"),
    ("sctp:127.0.0.1:5060", "TRANSPORT:HOST:PORT"),
    ("sip:127.0.0.1:5060;transport=ws", "not udp"),
])
def test_anything_not_explicit_is_refused(text: str, why: str) -> None:
    with pytest.raises(ScopeError, match=why):
        parse_endpoint(text, resolve=no_dns)


def test_media_host_and_local_address_rules() -> None:
    assert parse_host("127.0.0.1") == "127.0.0.1"
    with pytest.raises(ScopeError):
        parse_host("10.0.0.0/24")
    assert parse_local("127.0.0.6:5099") == ("127.0.0.6", 5099)
    for bad in ("127.0.0.6:0", "pbx.example:5060", "127.0.0.6"):
        with pytest.raises(ScopeError):
            parse_local(bad)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_guard_refuses_unnamed_endpoints_and_media_hosts() -> None:
    g = Guard(frozenset({("127.0.0.1", 5061)}), {"127.0.0.1"}, 10, 60)
    g.signalling(("127.0.0.1", 5061))
    g.media(("127.0.0.1", 40000))
    with pytest.raises(ScopeError, match="not a named target"):
        g.signalling(("127.0.0.1", 5060))
    with pytest.raises(ScopeError, match="not a named host"):
        g.media(("127.0.0.2", 40000))
    assert g.sent == 2  # refused sends are not sent


def test_guard_bounds_count_and_time() -> None:
    clock = Clock()
    g = Guard(frozenset({("127.0.0.1", 1)}), set(), 3, 10, clock=clock)
    for _ in range(3):
        g.signalling(("127.0.0.1", 1))
    with pytest.raises(BudgetExceeded, match="packet budget"):
        g.signalling(("127.0.0.1", 1))
    g2 = Guard(frozenset({("127.0.0.1", 1)}), set(), 100, 10, clock=clock)
    clock.now += 11
    with pytest.raises(BudgetExceeded, match="time budget"):
        g2.spend()


@pytest.mark.parametrize("argv", [
    ["probe", "udp:127.0.0.0/8:5060"], ["probe", "sip:127.0.0.1"],
    ["probe", "tls:127.0.0.1:5061", "--flood", "5000"],
    ["probe", "tls:127.0.0.1:5061", "--cert", "x.crt"],
    ["probe", "tls:127.0.0.1:5061", "--media-host", "10.0.0.0/8"],
    ["probe", "tls:127.0.0.1:5061", "--legacy-side", "pbx:5060"],
])
def test_cli_refuses_with_a_clear_error_and_sends_nothing(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("srtpgw: probe: ") and "Traceback" not in err
