"""RFC 4475 vectors and mutated messages over UDP, TCP and TLS to the running gateway.

No crash, no traceback, an error status or silence for what is invalid, the statuses the
firewall owns where it decides, and OPTIONS answered on every transport right afterwards.
"""

from __future__ import annotations

import contextlib
import ssl

import pytest

from tests.security.corpus import mutations, retarget, rfc4475_vectors
from tests.security.harness import (
    Gateway,
    UdpClient,
    call_id_of,
    client_context,
    final_status,
    request,
    status_of,
    stream_exchange,
)

# Vectors whose answer the firewall or parser owns, whatever the B2BUA does afterwards.
DECIDED = {"unkscm.dat": 416, "novelsc.dat": 416, "bext01.dat": 420, "badvers.dat": 505,
           "mismatch01.dat": 400, "mismatch02.dat": 400, "badbranch.dat": 400,
           "multi01.dat": 400, "insuf.dat": 400}
ERRORS = range(400, 700)


def options_ok(gw: Gateway) -> None:
    udp = UdpClient()
    try:
        udp.send(request("OPTIONS", port=udp.port), gw.ports["udp"])
        assert final_status(udp.collect(3.0)) == 200
    finally:
        udp.close()
    assert final_status(stream_exchange(request("OPTIONS", transport="TCP"), gw.ports["tcp"],
                                        3.0)) == 200
    assert final_status(stream_exchange(request("OPTIONS", transport="TLS"), gw.ports["tls"],
                                        3.0, client_context(gw.keys))) == 200


def check(name: str, cls: str, status: int | None) -> None:
    if name in DECIDED:
        assert status == DECIDED[name], (name, status)
    elif cls == "invalid" and name not in ("baddate.dat", "bigcode.dat", "scalarlg.dat"):
        assert status is None or status in ERRORS, (name, status)


def test_udp(gateway: Gateway) -> None:
    options_ok(gateway)
    for name, cls, data in rfc4475_vectors():
        # a socket per vector: some vectors share a branch, and with one sent-by the gateway
        # would rightly treat them as retransmissions of each other (RFC 3261 §17.2.3)
        one = UdpClient()
        try:
            one.send(retarget(data, one.port), gateway.ports["udp"])
            check(name, cls, final_status(one.collect(0.4, call_id=call_id_of(data))))
        finally:
            one.close()
    udp = UdpClient()
    try:
        for _, data in mutations(150, seed=7):
            udp.send(retarget(data, udp.port)[:65000], gateway.ports["udp"])
        answers = udp.collect(2.0, until_final=False)
        assert answers and all(200 <= (status_of(a) or 0) < 700 or status_of(a) == 100
                               for a in answers)
    finally:
        udp.close()
    assert gateway.alive()
    options_ok(gateway)


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_stream(gateway: Gateway, transport: str) -> None:
    ctx: ssl.SSLContext | None = client_context(gateway.keys) if transport == "tls" else None
    port = gateway.ports[transport]
    for name, cls, data in rfc4475_vectors():
        try:
            responses = stream_exchange(data, port, 0.5, ctx)
        except (ConnectionError, ssl.SSLError):
            responses = []
        check(name, cls, final_status(responses))
    for _, data in mutations(40, seed=11):
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            stream_exchange(data, port, 0.2, ctx)
    assert gateway.alive()
    options_ok(gateway)
