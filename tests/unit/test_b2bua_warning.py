"""Warning headers on SDP refusals (gateway.b2bua.status.sdp_warning): the phone learns why,
never an address of the other side."""

from __future__ import annotations

from gateway.b2bua.status import sdp_warning
from gateway.sdp.errors import SdpError, bad, unacceptable


def test_refusals_carry_a_warn_code_the_agent_and_the_reason() -> None:
    assert sdp_warning(unacceptable("no acceptable a=crypto"), "srtpgw") == [
        ("Warning", '399 srtpgw "no acceptable a=crypto"')]
    assert sdp_warning(SdpError(488, "unreachable", 301), "edge 1") == [
        ("Warning", '301 edge-1 "unreachable"')]
    assert sdp_warning(bad("malformed a=fingerprint"), "srtpgw") == []


def test_addresses_and_quotes_never_reach_the_warning_text() -> None:
    reason = 'answer names 10.1.2.3:4000, [2001:db8::5]:9, fd00::2 and pbx.internal.example "x"'
    (_, value), = sdp_warning(unacceptable(reason), "srtpgw")
    for leaked in ("10.1.2.3", "2001:db8", "fd00", "pbx.internal", '"x"'):
        assert leaked not in value, value
    assert value.startswith('399 srtpgw "answer names') and value.count('"') == 2
