"""The gateway runs out of file descriptors (its RLIMIT_NOFILE lowered to what it holds now, with
prlimit on the running process, as a low ``ulimit -n`` under load would leave it).

What must hold: a new call that cannot get its media sockets is refused with 503 (not a hang, not
a traceback) and counted; the calls already up continue (media and BYE); once descriptors are
free again new calls go through.
"""

from __future__ import annotations

import os
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.harness import DOMAIN, FaultRig, media_both_ways, start_rig, stop_rig
from tests.support.phone import plain_offer

pytestmark = pytest.mark.slow


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[FaultRig]:
    r = await start_rig(tmp_path)
    try:
        yield r
        r.assert_no_traceback()
    finally:
        await stop_rig(r)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_fd_exhaustion_new_calls_503_old_calls_continue_then_recover(rig: FaultRig) -> None:
    pid = rig.gw.pid
    old, old_in, a, b = await rig.call(rig.carrier, "100")
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid), hard))
    try:
        ep = await rig.endpoint()
        refused = []
        for i in range(3):
            call = await rig.pbx.invite(f"sip:11{i}@{DOMAIN}", rig.udp, plain_offer(ep))
            refused.append((await call.wait_final(10)).status)
        assert refused == [503, 503, 503]
        assert rig.carrier.requests("INVITE")[1:] == []  # nothing half-made on the other leg
        await media_both_ways(a, b)  # the call that was up goes on
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    second, second_in, _, _ = await rig.call(rig.carrier, "120")  # recovered
    await media_both_ways(a, b)
    for dialog, incoming in ((old, old_in), (second, second_in)):
        assert (await dialog.bye(5)).status == 200
        await incoming.wait_state("terminated", 5)
    # Said as it is (descriptors, not ports), once per refused call; the refused calls' CDRs
    # could not be opened either: lost, counted, reported once.
    assert len(rig.gw.lines("media.sockets_exhausted")) == 3
    assert rig.gw.lines("media.ports_exhausted") == []
    assert rig.gw.metric("srtpgw_cdr_write_errors_total") == 3
    assert len(rig.gw.lines("cdr.write_failed")) == 1
    assert rig.gw.metric("srtpgw_calls_total", trunk="pbx") == 5  # 3 refused
    assert rig.gw.metric("srtpgw_calls_total", trunk="pbx", outcome="answered") == 2
    causes = [r["end_cause"] for r in await rig.wait_cdrs(2)]
    assert causes == ["caller_bye", "caller_bye"]
    assert rig.gw.metric("srtpgw_calls_active") == 0
    assert rig.gw.metric("srtpgw_media_ports_used") == 0
