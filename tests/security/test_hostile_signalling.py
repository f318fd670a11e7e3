"""Issue 13's signalling defects, each replayed against the running gateway (`srtpgw run`) on
the transport where it was found: raw bytes in, raw bytes (or silence) back, and a log with no
traceback and no error-level internal error.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import urllib.request

import pytest

from tests.security.harness import (
    Gateway,
    UdpClient,
    assert_clean_log,
    client_context,
    final_status,
    request,
    status_of,
    stream_exchange,
)

GARBAGE_SECOND_VIA = b"Via: garbage\r\n"


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """One sample of the gateway's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.ports['admin']}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)\{([^}]*)\} (\S+)", line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return 0.0


def test_udp_malformed_second_via_gets_400_and_no_traceback(gateway: Gateway) -> None:
    """Item 1: a valid top Via and ``Via: garbage`` below it: a 400 to the top Via, counted
    once, and nothing of the broken Via read."""
    c = UdpClient()
    try:
        data = request("OPTIONS", port=c.port).replace(b"Max-Forwards", GARBAGE_SECOND_VIA
                                                       + b"Max-Forwards", 1)
        c.send(data, gateway.ports["udp"])
        answers = c.collect(2.0)
    finally:
        c.close()
    assert [status_of(a) for a in answers] == [400]
    assert b"\r\nVia: garbage\r\n" in answers[0]
    assert metric(gateway, "srtpgw_sip_responses_total", direction="sent", method="OPTIONS",
                  status_class="4xx", transport="udp") == 1
    assert_clean_log(gateway)


def reset_connections(port: int, count: int) -> None:
    """Connect and reset at once (SO_LINGER 0): the gateway accepts a socket whose peer is
    already gone, so it has no peer address."""
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.connect(("127.0.0.1", port))
        s.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_connection_reset_before_accept_leaves_no_traceback(gateway: Gateway,
                                                            transport: str) -> None:
    """Item 2: 50 resets before accept completes: no TypeError, nothing outside the JSON log,
    and the listener still answers."""
    reset_connections(gateway.ports[transport], 50)
    time.sleep(0.5)
    ctx = client_context(gateway.keys) if transport == "tls" else None
    assert final_status(stream_exchange(request("OPTIONS", transport=transport.upper()),
                                        gateway.ports[transport], 3.0, ctx)) == 200
    assert_clean_log(gateway)
    for line in (gateway.tmp / "gateway.log").read_text().splitlines():
        json.loads(line)
    assert gateway.stderr.read_text().strip() == ""


def test_refused_invite_is_answered_once_statelessly(gateway: Gateway) -> None:
    """Item 17: an INVITE from a permitted (spoofable) UDP source that the firewall refuses
    (420) or the B2BUA refuses before any work (415) gets one answer, not one per timer G
    tick until an ACK that a spoofed source never sends; a retransmission is answered once
    more, with the same To tag (RFC 3261 §8.2.7)."""
    c = UdpClient()
    try:
        refused = request("INVITE", port=c.port, extra="Require: x-unknown-ext\r\n")
        c.send(refused, gateway.ports["udp"])
        first = c.collect(3.5, until_final=False)
        c.send(refused, gateway.ports["udp"])
        again = c.collect(1.5, until_final=False)
        body = request("INVITE", port=c.port, body="hello").replace(
            b"Content-Type: application/sdp", b"Content-Type: text/plain")
        c.send(body, gateway.ports["udp"])
        other = c.collect(3.5, until_final=False)
    finally:
        c.close()
    assert [status_of(a) for a in first] == [420]
    assert [status_of(a) for a in again] == [420] and again[0] == first[0]
    assert [status_of(a) for a in other] == [415]
    assert_clean_log(gateway)
