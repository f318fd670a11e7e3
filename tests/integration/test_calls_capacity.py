"""Per-trunk call limits are live counts: a call that ends frees its slot on both trunks."""

from __future__ import annotations

import pytest

from tests.integration.test_calls import DOMAIN, Rig, establish, rig
from tests.support.phone import plain_offer
from tests.support.rtp import RtpEndpoint

__all__ = ["rig"]


@pytest.mark.parametrize("rig", [{"trunks": {"carrier": {"max_calls": 1}}}], indirect=True)
async def test_ended_call_frees_its_slot_on_both_trunks(rig: Rig) -> None:
    b2bua = rig.gw.b2bua
    for _ in range(2):   # the second round needs the first call's slot back
        call, incoming, _, _ = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
        assert b2bua.active_calls("pbx") == b2bua.active_calls("carrier") == 1
        assert b2bua.active_calls() == 1 and b2bua.active_calls("pbx2") == 0
        ep = await RtpEndpoint.open()
        # the limit is the callee trunk's: the caller trunk has room, still 503
        second = await rig.pbx.invite(f"sip:101@{DOMAIN}", rig.udp, plain_offer(ep))
        assert (await second.wait_final(5)).status == 503
        assert (await incoming.bye(3)).status == 200
        await call.wait_request("BYE", 3)
        await rig.settle()
        assert b2bua.active_calls("pbx") == b2bua.active_calls("carrier") == 0
    rig.assert_clean()
