"""benchmarks/compare_rtpengine.py's NG client: bencode round trips, and a real rtpengine
offer/answer with the flags the comparison uses (SDES towards the SRTP side, no NULL suites)."""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import require_tool
from tests.interop.procs import private_port_range

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("compare_rtpengine",
                                                      BENCH / "compare_rtpengine.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


cr = _load()

values = st.recursive(
    st.integers(-(2**63), 2**63) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=20)


@given(values)
def test_bencode_round_trip(value: object) -> None:
    assert cr.bdecode(cr.bencode(value)) == value


def test_bencode_known_bytes() -> None:
    assert cr.bencode({"command": "ping", "flags": ["a", 1]}) == (
        b"d7:command4:ping5:flagsl1:ai1eee")


@pytest.mark.parametrize("bad", [b"", b"i12", b"5:abc", b"l", b"x", b"i1ei2e"])
def test_bdecode_rejects_garbage(bad: bytes) -> None:
    with pytest.raises(ValueError):
        cr.bdecode(bad)


@pytest.mark.interop
def test_rtpengine_offer_answer_sdes_without_null_suites(tmp_path: Path) -> None:
    require_tool("rtpengine")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        ng_port = s.getsockname()[1]
    lo = private_port_range(64)
    proc = cr.start_rtpengine(ng_port, lo, lo + 63, tmp_path / "rtpengine.log")
    ng = cr.NgClient(("127.0.0.1", ng_port))
    try:
        offer = ng.command("offer", **{
            "call-id": "t1", "from-tag": "a", "sdp": cr._sdp(40000, "RTP/AVP"),
            "transport-protocol": "RTP/SAVP", "ICE": "remove", "DTLS": "off",
            "SDES": ["no-NULL_HMAC_SHA1_80", "no-NULL_HMAC_SHA1_32"],
            "replace": ["origin", "session-connection"]})
        sdp = offer["sdp"]
        assert re.search(r"^m=audio \d+ RTP/SAVP ", sdp, re.M)
        suites = re.findall(r"^a=crypto:\d+ (\S+) inline:", sdp, re.M)
        assert cr.SUITE in suites and not [s for s in suites if "NULL" in s]
        assert "a=fingerprint" not in sdp
        tag = re.search(rf"^a=crypto:(\d+) {cr.SUITE} ", sdp, re.M).group(1)
        answer = ng.command("answer", **{
            "call-id": "t1", "from-tag": "a", "to-tag": "b",
            "sdp": cr._sdp(40002, "RTP/SAVP", f"a=crypto:{tag} {cr.SUITE} inline:"
                                               "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"),
            "ICE": "remove", "replace": ["origin", "session-connection"]})
        assert re.search(r"^m=audio \d+ RTP/AVP ", answer["sdp"], re.M)
        assert "a=crypto" not in answer["sdp"]  # the plain side gets plain RTP
    finally:
        ng.close()
        proc.terminate()
        proc.wait(10)
