"""`srtpgw probe` against Kamailio on the deliberately weak config in this directory (TLS 1.0
on, no client auth, Server header on, no pike, open REGISTER), media anchored on rtpengine in
userspace: the probe reports each weakness, and its media checks run through rtpengine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.procs import Procs, free_port
from tests.probe.targets import WeakKamailio, kamailio_identity, run_probe, start_rtpengine

DOMAIN = "kamailio.weak.test"
ADDRESS = "127.0.0.5"
LEGACY = "127.0.0.6"  # the probe's legacy side: a second host, so its addresses can leak


@pytest.mark.interop
@pytest.mark.slow
def test_weak_kamailio_and_rtpengine_weaknesses_are_reported(tmp_path: Path,
                                                             procs: Procs) -> None:
    require_tool("kamailio")
    require_tool("rtpengine")
    legacy = free_port(LEGACY, tcp=False)
    rtpengine, ng_port = start_rtpengine(tmp_path)
    try:
        cert, key = kamailio_identity(tmp_path, DOMAIN)
        kam = WeakKamailio("weak", tmp_path, ADDRESS, tls_target="", udp_target="",
                           certificate=cert, private_key=key, ca_file=cert,
                           legacy=f"sip:{LEGACY}:{legacy}", ng_port=ng_port)
        kam.start(procs)
        result = run_probe([f"tls:{ADDRESS}:{kam.tls_port}", "--domain", DOMAIN,
                            "--number", "100", "--extension", "100",
                            "--media-host", "127.0.0.1",  # rtpengine's interface
                            "--legacy-side", f"{LEGACY}:{legacy}",
                            "--plain-sip", f"udp:{ADDRESS}:{kam.udp_port}", "--json"])
    finally:
        rtpengine.terminate()
        rtpengine.wait(10)
    assert result.returncode == 1, result.stdout + result.stderr
    got = {f["check"]: f for f in json.loads(result.stdout)["findings"]}

    def failed(check: str, level: str, needle: str = "") -> None:
        f = got[check]
        assert (f["result"], f["level"]) == ("fail", level), (check, f)
        assert needle in f["evidence"], (check, f["evidence"])

    failed("tls.version.1.0", "MUST", "accepted")  # TLS 1.0 on
    failed("tls.version.1.1", "MUST", "accepted")
    failed("tls.suites.cbc_sha1", "SHOULD", "CBC_SHA")  # SECLEVEL=0, DEFAULT suites
    failed("tls.mtls.no_cert", "MUST", "200")  # no client auth
    failed("tls.mtls.foreign_ca", "MUST", "200")
    failed("exposure.fingerprint_headers", "SHOULD", "Server: kamailio")  # Server header on
    failed("exposure.reason_phrases", "SHOULD", "Keepalive")
    failed("flood.burst", "SHOULD", "300 served")  # no pike
    failed("exposure.unknown_source", "SHOULD")
    failed("exposure.unauthenticated_invite", "MUST", "200")
    failed("exposure.unauthenticated_register", "MUST", "200 OK")
    failed("exposure.enumeration", "SHOULD", "404")
    failed("exposure.internal_addresses", "SHOULD", LEGACY)
    failed("topology.secure_to_legacy", "SHOULD", "Call-ID")  # a proxy, not a B2BUA
    failed("topology.legacy_to_secure", "SHOULD", "X-Probe-Mark")
    # media through rtpengine: its defaults accept NULL suites and plain RTP on an SRTP trunk
    failed("media.null_suite_refused", "MUST", "NULL_HMAC_SHA1_80")
    failed("media.plain_rtp_refused", "MUST", "RTP/AVP")
    failed("media.sdes_over_insecure", "MUST", "in clear")
    assert got["media.answer_key_reuse"]["result"] == "pass"  # rtpengine keys its own leg
    assert got["media.srtp_answer"]["result"] == "pass"
    assert got["media.rtp_bleed"]["result"] in ("pass", "fail")  # it ran through rtpengine
    assert got["media.rtp_bleed"]["details"]["delivered"] > 0
    assert got["tls.version.1.3"]["result"] == "pass"
    assert got["tls.cert.san"]["result"] == "pass"
