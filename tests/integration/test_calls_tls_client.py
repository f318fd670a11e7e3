"""A secure-side caller that is a TLS client only (linphone, most mobile softphones): the
gateway's in-dialog requests toward it go over the connection its dialog arrived on, and only
once that has closed over a new one to its Contact's port (RFC 3261 §18.2.2, RFC 5923).

The carrier trunk's configured ``peer`` port has nothing listening on it, so a request sent
there (the old behaviour) is lost; the caller's Via and Contact name its own port, which is
neither the trunk's nor the connection's.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_calls import Rig, establish, media_both_ways, rig
from tests.integration.test_sip_helpers import capture
from tests.support.net import free_port
from tests.support.phone import apply_answer, plain_offer

__all__ = ["rig"]

NOWHERE = {"trunks": {"carrier": {"peer": f"127.0.0.1:{free_port('tcp')}"}}}


async def wait_connections(rig: Rig, count: int) -> None:
    for _ in range(100):
        if rig.gw.stack.transports.connections == count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"gateway holds {rig.gw.stack.transports.connections} connections")


@pytest.mark.parametrize("rig", [NOWHERE], indirect=True)
async def test_requests_reach_a_caller_that_refuses_inbound_connections(rig: Rig) -> None:
    call, incoming, car_ep, pbx_ep = await establish(rig, rig.carrier, rig.pbx, "100", rig.tls,
                                                     ("AES_CM_128_HMAC_SHA1_80",))
    await rig.carrier.stop_listening()
    with capture() as cap:
        # a re-INVITE from the legacy side reaches the caller and its answer comes back
        resp = await incoming.reinvite(plain_offer(pbx_ep, payloads=(8, 0)))
        assert resp.status == 200
        apply_answer(pbx_ep, resp.body)
        reoffer = await call.wait_request("INVITE", 2)
        assert reoffer.source == rig.tls          # over the caller's own connection
        await media_both_ways(car_ep, pbx_ep)
        # the far side hangs up: the BYE reaches the caller and is answered 200
        assert (await incoming.bye(3)).status == 200
        bye = await call.wait_request("BYE", 3)
        assert bye.source == rig.tls
        await call.wait_state("terminated", 2)
        await rig.settle()
        assert cap.events("tls.handshake_failed") == [] and cap.events("sip.send_failed") == []
    assert rig.carrier.connect_errors == []
    rig.assert_clean()


@pytest.mark.parametrize("rig", [NOWHERE], indirect=True)
async def test_once_the_connection_closed_the_contact_port_is_dialled(rig: Rig) -> None:
    call, incoming, _, _ = await establish(rig, rig.carrier, rig.pbx, "100", rig.tls,
                                           ("AES_CM_128_HMAC_SHA1_80",))
    rig.carrier.drop_connections()
    await wait_connections(rig, 0)
    assert (await incoming.bye(3)).status == 200
    bye = await call.wait_request("BYE", 3)
    # a new connection from the gateway (not its listener's address) to the Contact's port
    assert bye.source is not None and bye.source != rig.tls
    assert rig.carrier.port != int(str(NOWHERE["trunks"]["carrier"]["peer"]).rsplit(":")[1])
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("rig", [NOWHERE], indirect=True)
async def test_a_caller_that_reconnected_is_reached_over_its_new_connection(rig: Rig) -> None:
    call, incoming, _, _ = await establish(rig, rig.carrier, rig.pbx, "100", rig.tls,
                                           ("AES_CM_128_HMAC_SHA1_80",))
    rig.carrier.drop_connections()
    await wait_connections(rig, 0)
    await rig.carrier.stop_listening()
    # the phone comes back on a new connection with an in-dialog request
    info = await call.request("INFO", "Signal=5\r\n", "application/dtmf-relay")
    assert info.status == 200
    assert (await incoming.bye(3)).status == 200
    bye = await call.wait_request("BYE", 3)
    assert bye.source == rig.tls
    await rig.settle()
    rig.assert_clean()
