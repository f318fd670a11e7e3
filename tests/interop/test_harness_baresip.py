"""Harness self-tests: baresip calls baresip directly, with tshark on the caller's address.

No gateway involved: if these fail, the harness (or the peer install) is broken, not srtpgw.
The plain call is the positive control for the wire checks: the same decoding that finds the
tone in plain RTP must find nothing in SRTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.baresip import RTP_SPAN, Softphone, wait_call
from tests.interop.capture import Capture
from tests.interop.conftest import Pki
from tests.interop.procs import Procs
from tests.interop.tone import read_samples, tone_coverage
from tests.interop.wire import (
    TAG_LENGTH,
    audible_tone,
    plain_pcmu,
    rtp_packets,
    sip_texts,
    trailer_lengths,
)

pytestmark = pytest.mark.interop

CALL_SECONDS = 5


def _call(tmp_path: Path, procs: Procs, transport: str, **kw: object
          ) -> tuple[Softphone, Softphone, Capture]:
    callee = Softphone("bob", tone_hz=600, workdir=tmp_path, **kw)
    caller = Softphone("alice", tone_hz=1000, workdir=tmp_path, **kw)
    cap = Capture(procs, tmp_path, "call", f"{caller.capture_filter} or {callee.capture_filter}")
    callee.start(procs, seconds=CALL_SECONDS + 6)
    caller.start(procs, seconds=CALL_SECONDS, dial=callee.uri(transport))
    wait_call(caller, callee, timeout=CALL_SECONDS + 15)
    cap.stop()
    assert caller.established() and callee.established(), procs.tails()
    return caller, callee, cap


def _assert_tones(caller: Softphone, callee: Softphone) -> None:
    heard_by_caller = read_samples(caller.recording())
    heard_by_callee = read_samples(callee.recording())
    assert tone_coverage(heard_by_caller, 600) > 0.7
    assert tone_coverage(heard_by_callee, 1000) > 0.7
    assert tone_coverage(heard_by_caller, 1000) < 0.05  # no echo of its own tone


def test_baresip_direct_plain_rtp_is_audible_on_the_wire(tmp_path: Path, procs: Procs) -> None:
    require_tool("baresip")
    require_tool("tshark")
    caller, callee, cap = _call(tmp_path, procs, "udp")
    _assert_tones(caller, callee)
    udp = cap.udp()
    sent = [d.payload for d in udp if caller.rtp_min <= d.sport < caller.rtp_min + RTP_SPAN]
    assert len(plain_pcmu(sent)) > 100
    assert trailer_lengths(sent) == {0}
    assert audible_tone(plain_pcmu(sent), 1000) > 0.7
    assert sip_texts(d.payload for d in udp)


def test_baresip_direct_tls_srtp_tones(tmp_path: Path, procs: Procs, pki: Pki) -> None:
    require_tool("baresip")
    require_tool("tshark")
    caller, callee, cap = _call(tmp_path, procs, "tls", mediaenc="srtp-mand",
                                certificate=pki.peer_pem, ca_file=pki.keys.ca_cert)
    _assert_tones(caller, callee)
    assert "SRTP is Enabled" in caller.log() and "SRTP is Enabled" in callee.log()
    assert "RTP/SAVP" in caller.log()  # SDES offer seen in baresip's own SIP trace
    rtp = rtp_packets(d.payload for d in cap.udp())
    assert len(rtp) > 100
    assert plain_pcmu(rtp) == []
    assert trailer_lengths(rtp) == {TAG_LENGTH["AES_CM_128_HMAC_SHA1_80"]}
    assert audible_tone(rtp, 1000) < 0.05 and audible_tone(rtp, 600) < 0.05
    tcp = [d.payload for d in cap.tcp()]
    assert tcp and sip_texts(tcp) == []  # signalling only inside TLS
