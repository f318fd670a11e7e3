"""The test UA against SIPp, a strict scripted SIP peer: if SIPp's scenarios pass against our
UAS and our UAC, the UA's dialogs, ACKs, CANCEL and re-INVITE handling follow RFC 3261."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.procs import Procs
from tests.interop.sipp import Sipp, sdes
from tests.support.phone import answerer, sdes_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sdes import make_sdp
from tests.support.sip_ua import SipTestUA

pytestmark = pytest.mark.interop


async def _finish(sipp: Sipp, timeout: float = 30) -> int:
    """Wait for SIPp to exit without blocking the loop our UA runs on."""
    assert sipp.proc is not None
    deadline = time.monotonic() + timeout
    while sipp.proc.running and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return sipp.wait(1)


@pytest.mark.parametrize(("scenario", "calls"), [
    ("uac_basic.xml", 3), ("uac_hold.xml", 1), ("uac_cancel.xml", 1), ("uac_486.xml", 1)])
async def test_sipp_calls_our_uas(tmp_path: Path, scenario: str, calls: int) -> None:
    require_tool("sipp")
    procs = Procs(tmp_path)
    ua = await SipTestUA.start("udp", user="callee")
    ep = await RtpEndpoint.open()
    try:
        ua.uas.answer = answerer(ep)
        if scenario == "uac_cancel.xml":
            ua.uas.invite_statuses, ua.uas.delay = (180, 200), 20
        elif scenario == "uac_486.xml":
            ua.uas.invite_statuses = (486,)
        sipp = Sipp(name="caller", scenario=scenario, workdir=tmp_path, address="127.0.0.1",
                    keys=sdes())
        sipp.start(procs, f"127.0.0.1:{ua.port}", calls=calls, rate=10, hold_ms=200)
        assert await _finish(sipp) == 0, sipp.report()
        invites = [m for m in ua.requests("INVITE") if not m.to_tag]
        assert len({m.call_id for m in invites}) == calls
        if scenario == "uac_cancel.xml":
            assert ua.requests("CANCEL") and ua.responses() == []
            assert [d.state for d in ua.dialogs] == ["terminated"]
    finally:
        await ua.close()
        ep.close()
        procs.close()
        print(procs.tails())


@pytest.mark.parametrize("scenario", ["uas_basic.xml", "uas_hold.xml"])
async def test_our_uac_calls_sipp(tmp_path: Path, scenario: str) -> None:
    require_tool("sipp")
    procs = Procs(tmp_path)
    ua = await SipTestUA.start("udp", user="caller")
    ep = await RtpEndpoint.open()
    try:
        sipp = Sipp(name="callee", scenario=scenario, workdir=tmp_path, address="127.0.0.1",
                    keys=sdes())
        sipp.start(procs)
        await asyncio.sleep(0.3)  # SIPp binds before reading its scenario; UDP retransmits too
        offer, _ = sdes_offer(ep)
        call = await ua.invite(f"sip:callee@{sipp.addr}", ("127.0.0.1", sipp.port), offer)
        assert (await call.wait_final(timeout=10)).status == 200
        if scenario == "uas_hold.xml":
            held = make_sdp("127.0.0.1", ep.port, direction="sendonly", version=2)
            assert (await call.reinvite(held)).status == 200
            resumed = make_sdp("127.0.0.1", ep.port, direction="sendrecv", version=3)
            assert (await call.reinvite(resumed)).status == 200
        assert (await call.bye()).status == 200
        assert await _finish(sipp) == 0, sipp.report()
    finally:
        await ua.close()
        ep.close()
        procs.close()
        print(procs.tails())
