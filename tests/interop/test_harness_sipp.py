"""Harness self-test: every SIPp scenario pair, UAC straight to UAS (no gateway, no proxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.procs import Procs
from tests.interop.sipp import PLAIN, Sipp, sdes

pytestmark = pytest.mark.interop

PAIRS = {
    "basic": ("uac_basic.xml", "uas_basic.xml", {}),
    "cancel": ("uac_cancel.xml", "uas_cancel.xml", {}),
    "callee_bye": ("uac_callee_bye.xml", "uas_bye.xml", {}),
    "hold_resume": ("uac_hold.xml", "uas_hold.xml", {}),
    "busy_486": ("uac_486.xml", "uas_486.xml", {}),
    "not_acceptable_488": ("uac_488.xml", "uas_488.xml", {}),
}


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_sipp_pair_direct(case: str, tmp_path: Path, procs: Procs) -> None:
    require_tool("sipp")
    uac_xml, uas_xml, extra = PAIRS[case]
    uas = Sipp("uas", uas_xml, tmp_path, "127.0.0.3", keys={**PLAIN, **extra})
    uac = Sipp("uac", uac_xml, tmp_path, "127.0.0.2", keys=sdes())
    uas.start(procs, calls=2, hold_ms=300, timeout=15)
    uac.start(procs, uas.addr, calls=2, rate=5, hold_ms=300, timeout=15)
    assert uac.wait(20) == 0, uac.report() + uas.report()
    assert uas.wait(10) == 0, uas.report()
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in uac.messages()
