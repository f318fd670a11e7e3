"""Harness self-test: baresip calls baresip directly over TLS + SDES-SRTP, tones checked.

No gateway involved: if this fails, the harness (or the peer install) is broken, not srtpgw.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.baresip import Softphone, wait_all
from tests.interop.conftest import Pki
from tests.interop.procs import Procs
from tests.interop.tone import read_samples, tone_coverage

pytestmark = pytest.mark.interop

CALL_SECONDS = 6


def test_baresip_direct_tls_srtp_tones(tmp_path: Path, procs: Procs, pki: Pki) -> None:
    require_tool("baresip")
    kw = dict(workdir=tmp_path, mediaenc="srtp-mand", certificate=pki.peer_pem,
              ca_file=pki.keys.ca_cert)
    callee = Softphone("bob", address="127.0.0.3", tone_hz=600, **kw)
    caller = Softphone("alice", address="127.0.0.2", tone_hz=1000, **kw)
    callee.start(procs, seconds=CALL_SECONDS + 6)
    caller.start(procs, seconds=CALL_SECONDS, dial=callee.uri("tls"))
    wait_all([caller, callee], timeout=CALL_SECONDS + 15)

    assert caller.established() and callee.established(), procs.tails()
    assert "SRTP is Enabled" in caller.log() and "SRTP is Enabled" in callee.log()
    assert "RTP/SAVP" in caller.log()  # SDES offer seen in the SIP trace
    heard_by_caller = read_samples(caller.recording())
    heard_by_callee = read_samples(callee.recording())
    assert tone_coverage(heard_by_caller, 600) > 0.7
    assert tone_coverage(heard_by_callee, 1000) > 0.7
    assert tone_coverage(heard_by_caller, 1000) < 0.05  # no echo of its own tone
