"""`srtpgw probe` against srtpgw itself on its hardened example config (only ports, addresses
and key paths changed): every check passes and the run exits 0. The probe plays the carrier
(mutual TLS with the identity the example demands) and, on ``--legacy-side``, the PBX."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.interop.procs import Procs, free_port
from tests.probe.targets import GATEWAY_DOMAIN, HardenedGateway, run_probe

# Every check the probe has; each must have run (not skipped) against srtpgw.
EXPECTED = {
    "tls.transport", "tls.version.1.0", "tls.version.1.1", "tls.version.1.2", "tls.version.1.3",
    "tls.suites.null", "tls.suites.rc4", "tls.suites.cbc_sha1", "tls.suites.static_rsa",
    "tls.suites.forward_secrecy", "tls.compression", "tls.renegotiation", "tls.cert.san",
    "tls.cert.expiry", "tls.cert.strength", "tls.cert.chain", "tls.mtls.no_cert",
    "tls.mtls.foreign_ca", "exposure.unknown_source", "exposure.unauthenticated_options",
    "exposure.unauthenticated_invite", "exposure.unauthenticated_register",
    "exposure.enumeration", "exposure.fingerprint_headers", "exposure.reason_phrases",
    "exposure.internal_addresses", "screening.malformed", "screening.liveness",
    "flood.burst", "media.plain_rtp_refused", "media.null_suite_refused",
    "media.sdes_over_insecure", "media.answer_key_reuse", "media.srtp_answer",
    "media.rtp_bleed", "topology.secure_to_legacy", "topology.legacy_to_secure",
    "topology.addresses", "topology.key_passthrough",
}


@pytest.mark.slow
def test_hardened_srtpgw_passes_every_check(tmp_path: Path, procs: Procs) -> None:
    legacy = free_port("127.0.0.1", tcp=False)
    gw = HardenedGateway(tmp_path, legacy)
    gw.start(procs)
    k = gw.keys
    result = run_probe([gw.tls_target, "--cert", str(k.peer_cert), "--key", str(k.peer_key),
                        "--ca", str(k.ca_cert), "--domain", GATEWAY_DOMAIN,
                        "--legacy-side", f"127.0.0.1:{legacy}", "--plain-sip", gw.udp_target,
                        "--extension", "100", "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    got = {f["check"]: f for f in doc["findings"]}
    assert set(got) >= EXPECTED, sorted(EXPECTED - set(got))
    bad = {c: f["evidence"] for c, f in got.items() if f["result"] in ("fail", "skip")}
    assert not bad, bad
    # the checks really exercised the gateway: it refused and it banned
    assert "488" in got["media.plain_rtp_refused"]["evidence"]
    assert "banned" in got["flood.burst"]["evidence"]
    assert got["media.rtp_bleed"]["details"]["delivered"] > 0
    assert doc["packets_sent"] < 4000
    assert "Traceback" not in gw.proc.output()  # type: ignore[union-attr]


@pytest.mark.slow
def test_hardened_srtpgw_legacy_listener_as_a_pbx_side(tmp_path: Path, procs: Procs) -> None:
    """The UDP side with ``--profile pbx``: a stranger (another loopback source) gets silence;
    the PBX's own source gets RFC answers and is rate-limited."""
    gw = HardenedGateway(tmp_path, free_port("127.0.0.1", tcp=False))
    gw.start(procs)
    result = run_probe([gw.udp_target, "--profile", "pbx", "--stranger-source", "127.0.0.2",
                        "--domain", GATEWAY_DOMAIN, "--extension", "100", "--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    got = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert not [c for c, f in got.items() if f["result"] == "fail"]
    for check in ("exposure.unknown_source", "exposure.unauthenticated_invite",
                  "exposure.unauthenticated_register", "exposure.enumeration"):
        assert got[check]["result"] == "pass" and "silence" in got[check]["evidence"], check
    assert got["media.sdes_over_insecure"]["result"] == "pass"
    assert got["flood.burst"]["result"] == "pass"
    assert got["tls.transport"]["result"] == "pass"  # a PBX side need not speak TLS
