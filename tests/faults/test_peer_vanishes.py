"""A trunk peer vanishes mid-call: its UDP port closes, its TCP connection is reset (the peer
still listening, or gone too), its TLS connection goes half-open.

What must hold, each time: a call that could continue does (media flows, the next in-dialog
request gets through); a call that cannot ends cleanly (BYE to the surviving leg, a CDR with the
right end_cause); other calls are untouched; metrics count it; the gateway logs no traceback.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultRig, media_both_ways, start_rig, stop_rig

pytestmark = pytest.mark.slow


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[FaultRig]:
    r = await start_rig(tmp_path, **getattr(request, "param", {}))
    try:
        yield r
        r.assert_no_traceback()
    finally:
        await stop_rig(r)


def reset_connections(ua) -> int:
    """Close every stream connection of ``ua`` with an RST (SO_LINGER 0), as a crashed host's
    kernel or a middlebox would."""
    n = 0
    for conn in list(ua._conns.values()):
        sock = conn.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()
        n += 1
    ua._conns.clear()
    return n


def by_callee(cdrs: list[dict], user: str) -> dict:
    found = [c for c in cdrs if (c.get("callee") or "").endswith(user)]
    assert len(found) == 1, cdrs
    return found[0]


@pytest.mark.parametrize("rig", [{"trunk_extra": {"far": {"media_timeout": 2.0}}}],
                         indirect=True)
async def test_udp_peer_vanishes_media_timeout_ends_only_its_call(rig: FaultRig) -> None:
    other, other_in, oa, ob = await rig.call(rig.carrier, "100")  # must live on
    call, _, _, _ = await rig.call(rig.far, "9200")
    assert rig.gw.metric("srtpgw_calls_active") == 2
    assert rig.gw.metric("srtpgw_media_ports_used") > 0
    answered = rig.gw.metric("srtpgw_calls_total", trunk="pbx", outcome="answered")
    await rig.far.close()  # its SIP port and (below) its RTP port close: the host is gone
    rig.endpoints[-1].close()
    bye = await call.wait_request("BYE", timeout=10)  # media timeout -> BYE to the caller
    assert bye.method == "BYE"
    record = by_callee(await rig.wait_cdrs(1), "200")
    assert record["end_cause"] == "media_timeout"
    assert rig.gw.metric("srtpgw_calls_total", trunk="pbx", outcome="answered") == answered + 1
    await media_both_ways(oa, ob)  # the other call never noticed
    assert (await other.bye(5)).status == 200
    await other_in.wait_state("terminated", 5)
    assert by_callee(await rig.wait_cdrs(2), "100")["end_cause"] == "caller_bye"


@pytest.mark.parametrize("rig", [{"far_transport": "tcp"}], indirect=True)
async def test_tcp_reset_with_peer_alive_call_continues(rig: FaultRig) -> None:
    call, incoming, a, b = await rig.call(rig.far, "9300")
    assert reset_connections(rig.far) >= 1
    await asyncio.sleep(0.3)
    await media_both_ways(a, b)  # media does not care about the signalling connection
    # The next in-dialog request opens a new connection to the (still listening) peer.
    assert (await call.bye(10)).status == 200
    await incoming.wait_state("terminated", 10)
    assert by_callee(await rig.wait_cdrs(1), "300")["end_cause"] == "caller_bye"
    assert rig.gw.metric("srtpgw_calls_active") == 0


@pytest.mark.parametrize("rig", [{"far_transport": "tcp"}], indirect=True)
async def test_tcp_peer_gone_caller_bye_still_ends_cleanly(rig: FaultRig) -> None:
    call, _, _, _ = await rig.call(rig.far, "9400")
    assert rig.gw.metric("srtpgw_calls_active") == 1
    reset_connections(rig.far)
    await rig.far.close()  # listener closed too: every reconnect is refused
    response = await call.bye(15)
    assert response.status in (200, 408, 481, 503), response
    record = by_callee(await rig.wait_cdrs(1), "400")
    assert record["end_cause"] == "caller_bye"
    for _ in range(100):
        if rig.gw.metric("srtpgw_calls_active") == 0:
            break
        await asyncio.sleep(0.1)
    assert rig.gw.metric("srtpgw_calls_active") == 0
    assert rig.gw.metric("srtpgw_media_ports_used") == 0


async def test_tls_peer_half_open_call_ends_on_the_other_sides_bye(rig: FaultRig) -> None:
    """The carrier's host stops answering without closing (cable pulled): the gateway's BYE
    over TLS gets no answer, yet the PBX's BYE is answered and the call ends."""
    _, incoming, _, _ = await rig.carrier_calls()
    for conn in rig.carrier._conns.values():
        conn.writer.transport.pause_reading()
    response = await incoming.bye(15)  # the PBX (callee) hangs up
    assert response.status in (200, 408), response
    record = by_callee(await rig.wait_cdrs(1, timeout=15), "200")
    assert record["end_cause"] == "callee_bye"
    for _ in range(150):
        if rig.gw.metric("srtpgw_calls_active") == 0:
            break
        await asyncio.sleep(0.1)
    assert rig.gw.metric("srtpgw_calls_active") == 0
    assert rig.gw.metric("srtpgw_media_ports_used") == 0
