"""Which SDES suites baresip 1.0 accepts as answerer (it offers only AES_CM_128_HMAC_SHA1_80).

SIPp offers one suite at a time to an auto-answering baresip with mandatory SRTP; the answer must
pick that suite. The gateway tests parametrize over ``BARESIP_SUITES`` from here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.baresip import Softphone
from tests.interop.capture import loopback_address
from tests.interop.procs import Procs
from tests.interop.sipp import Sipp, sdes

BARESIP_OFFERS = "AES_CM_128_HMAC_SHA1_80"
BARESIP_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM",
                  "AEAD_AES_256_GCM")


@pytest.mark.interop
@pytest.mark.parametrize("suite", BARESIP_SUITES)
def test_baresip_answers_sdes_suite(suite: str, tmp_path: Path, procs: Procs) -> None:
    require_tool("baresip")
    require_tool("sipp")
    phone = Softphone("bob", workdir=tmp_path, tone_hz=600, mediaenc="srtp-mand")
    phone.start(procs, seconds=8)
    uac = Sipp("uac", "uac_basic.xml", tmp_path, loopback_address(), keys=sdes(suite))
    uac.start(procs, f"{phone.address}:{phone.port}", calls=1, hold_ms=500, timeout=10,
              service="bob")
    assert uac.wait(15) == 0, uac.report() + procs.tails()
    answers = re.findall(r"a=crypto:\S+ (\S+) inline:", uac.messages().split("SIP/2.0 200 ")[1])
    assert answers == [suite]
