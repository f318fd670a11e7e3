"""Phones that register over TLS (a trunk with ``registrar = true``) and are called over their
registered flow, with SIP Outbound keep-alives (RFC 5626 §3.5.1) and a dead flow dropped.

The carrier trunk's configured ``peer`` has nothing listening, and the registered phone stops
listening after its REGISTER: the call can reach it only over the flow it opened.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_calls import DOMAIN, Rig, establish, media_both_ways, rig
from tests.support.net import free_port
from tests.support.sip_ua import SipTestUA

__all__ = ["rig"]

INSTANCE = '"<urn:uuid:6c6d2f5a-2a4e-4b7a-9f53-0a1b2c3d4e5f>"'
PHONES = {"trunks": {"carrier": {"registrar": True, "peer": f"127.0.0.1:{free_port('tcp')}"}},
          "registrar": {"flow_timer": 1, "min_expires": 1}}


async def register(ua: SipTestUA, rig: Rig, expires: int = 300, outbound: bool = True):
    contact = ua.contact + (f";+sip.instance={INSTANCE};reg-id=1" if outbound else "")
    return await ua.request("REGISTER", f"sip:{ua.user}@{DOMAIN}", rig.tls, headers=[
        ("Contact", contact), ("Expires", str(expires)), ("Supported", "outbound, path")])


async def wait_bindings(rig: Rig, count: int, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if len(rig.gw.b2bua.registrar) == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(rig.gw.b2bua.registrar)} bindings, expected {count}")


@pytest.mark.parametrize("rig", [PHONES], indirect=True)
async def test_registered_phone_is_called_over_its_flow(rig: Rig) -> None:
    ok = await register(rig.carrier, rig)
    assert ok.status == 200
    assert ok.header("Require") == "outbound" and ok.header("Flow-Timer") == "1"
    assert "expires=" in (ok.header("Contact") or "")
    await rig.carrier.stop_listening()
    listing = rig.gw.b2bua.registrar.listing(rig.gw.loop.time())
    assert [(b["trunk"], b["user"], b["outbound"]) for b in listing] == [
        ("carrier", "carrier", True)]

    async def keepalive() -> None:
        while True:
            rig.carrier.send_raw(b"\r\n\r\n", rig.tls)
            await asyncio.sleep(0.3)

    pinger = asyncio.get_running_loop().create_task(keepalive())
    try:
        call, incoming, pbx_ep, car_ep = await establish(rig, rig.pbx, rig.carrier, "carrier",
                                                         rig.udp)
        assert incoming.invite.source == rig.tls       # over the registered flow
        assert incoming.invite.uri.startswith(f"sip:carrier@{rig.carrier.host}:")
        await media_both_ways(pbx_ep, car_ep)
        await asyncio.sleep(2.0)                       # longer than 1.5 x Flow-Timer
        assert len(rig.gw.b2bua.registrar) == 1        # kept alive by the pings
        assert (await call.bye(3)).status == 200
        await incoming.wait_request("BYE", 3)
    finally:
        pinger.cancel()
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("rig", [PHONES], indirect=True)
async def test_a_silent_flow_is_dropped_with_its_binding(rig: Rig) -> None:
    assert (await register(rig.carrier, rig)).status == 200
    await rig.carrier.stop_listening()
    # no keep-alives: the gateway closes the flow after 1.5 x Flow-Timer and forgets it
    await wait_bindings(rig, 0, timeout=4.0)
    assert rig.gw.stack.transports.connections == 0
    call = await rig.pbx.invite(f"sip:carrier@{DOMAIN}", rig.udp, None)
    assert (await call.wait_final(3)).status == 480
    assert rig.carrier.requests("INVITE") == []


@pytest.mark.parametrize("rig", [PHONES], indirect=True)
async def test_closed_flow_and_unregister_drop_the_binding(rig: Rig) -> None:
    assert (await register(rig.carrier, rig, outbound=False)).status == 200
    await wait_bindings(rig, 1)
    rig.carrier.drop_connections()
    await wait_bindings(rig, 0)
    assert (await register(rig.carrier, rig)).status == 200
    assert (await register(rig.carrier, rig, expires=0)).status == 200
    await wait_bindings(rig, 0)
    call = await rig.pbx.invite(f"sip:carrier@{DOMAIN}", rig.udp, None)
    assert (await call.wait_final(3)).status == 480


@pytest.mark.parametrize("rig", [PHONES], indirect=True)
async def test_register_on_a_trunk_that_does_not_register_is_405(rig: Rig) -> None:
    # the PBX's trunk does not register: REGISTER there stays 405
    assert (await rig.pbx.request("REGISTER", f"sip:pbx@{DOMAIN}", rig.udp,
                                  headers=[("Contact", rig.pbx.contact)])).status == 405
    assert len(rig.gw.b2bua.registrar) == 0
