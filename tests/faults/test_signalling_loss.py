"""Loss, duplication and reordering on the PBX's signalling path (a seeded loopback UDP proxy
between the PBX phone and the gateway, both ways).

What must hold: retransmission timers recover every call (answered, ACKed, hung up), a
duplicated INVITE makes no second call, every CDR says caller_bye, and the call count matches.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.harness import DOMAIN, FaultRig, start_rig, stop_rig
from tests.faults.udp_proxy import ImpairingProxy
from tests.support.phone import answerer, apply_answer, plain_offer

pytestmark = pytest.mark.slow
CALLS = 8


async def one_call(rig: FaultRig, via: tuple[str, int], n: int) -> None:
    a = await rig.endpoint()
    call = await rig.pbx.invite(f"sip:30{n}@{DOMAIN}", via, plain_offer(a), timeout=30)
    final = await call.wait_final(30)
    assert final.status == 200, final
    apply_answer(a, final.body)
    assert (await call.bye(30)).status == 200


async def test_lossy_reordering_duplicating_path_every_call_completes(tmp_path: Path) -> None:
    proxy = ImpairingProxy(("127.0.0.1", 0), loss=0.2, dup=0.15, reorder=0.15)
    await proxy.start()
    rig = await start_rig(tmp_path, trunk_extra={"pbx": {"peer": f"127.0.0.1:{proxy.back[1]}"}})
    try:
        proxy.upstream = rig.udp
        rig.carrier.uas.answer = answerer(await rig.endpoint())
        await asyncio.gather(*(one_call(rig, proxy.front, n) for n in range(CALLS)))
        records = await rig.wait_cdrs(CALLS, timeout=30)
        assert len(records) == CALLS
        assert {r["end_cause"] for r in records} == {"caller_bye"}
        assert len({i.header("Call-ID") for i in rig.carrier.requests("INVITE")}) == CALLS
        assert rig.gw.metric("srtpgw_calls_total", trunk="pbx", outcome="answered") == CALLS
        for _ in range(100):
            if rig.gw.metric("srtpgw_calls_active") == 0:
                break
            await asyncio.sleep(0.1)
        assert rig.gw.metric("srtpgw_calls_active") == 0
        c = proxy.counts
        assert c["up.lost"] and c["down.lost"] and c["up.duplicated"] and c["up.reordered"], c
        rig.assert_no_traceback()
    finally:
        await stop_rig(rig)
        proxy.close()
