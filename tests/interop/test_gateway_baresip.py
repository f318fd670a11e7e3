"""baresip over TLS + SRTP (SDES, and DTLS-SRTP) <-> srtpgw <-> baresip over UDP + plain RTP,
both directions.

Each phone plays its own tone and records what it hears; tshark watches both sides: the secure
side must carry no plain RTP and no clear-text SIP, the legacy side no ``a=crypto``, while the
legacy side's plain RTP (positive control) carries the tones the gateway decrypted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.baresip import RTP_SPAN, Softphone, wait_call
from tests.interop.capture import Capture
from tests.interop.conftest import Pki
from tests.interop.gateway import Gateway
from tests.interop.procs import Procs, wait_log
from tests.interop.test_harness_baresip_suites import BARESIP_OFFERS, BARESIP_SUITES
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
SECURE_HZ = 1000
LEGACY_HZ = 600


@dataclass
class Scene:
    gateway: Gateway
    secure: Softphone
    legacy: Softphone


def _scene(tmp_path: Path, procs: Procs, pki: Pki, suite: str, dtls: bool = False) -> Scene:
    for tool in ("baresip", "tshark"):
        require_tool(tool)
    secure = Softphone("carrier", workdir=tmp_path, tone_hz=SECURE_HZ,
                       mediaenc="dtls_srtp" if dtls else "srtp-mand",
                       certificate=pki.peer_pem, ca_file=pki.keys.ca_cert)
    legacy = Softphone("pbx", workdir=tmp_path, tone_hz=LEGACY_HZ)
    gw = Gateway(tmp_path, pki.keys.dir,
                 legacy_peer=f"{legacy.address}:{legacy.port}",
                 secure_peer=f"{secure.address}:{secure.tls_port}",
                 legacy_sources=[f"{legacy.address}/32"],
                 secure_sources=[f"{secure.address}/32"],
                 suites=[suite], secure_media="dtls-srtp" if dtls else "srtp")
    gw.start(procs)
    return Scene(gw, secure, legacy)


def _run_call(tmp_path: Path, procs: Procs, scene: Scene, caller: Softphone, callee: Softphone,
              target: str) -> tuple[Capture, Capture]:
    gw, secure, legacy = scene.gateway, scene.secure, scene.legacy
    gw_tls = f"(host {gw.address} and tcp port {gw.tls_port})"
    secure_cap = Capture(procs, tmp_path, "secure", f"{secure.capture_filter} or {gw_tls}")
    legacy_cap = Capture(procs, tmp_path, "legacy", legacy.capture_filter)
    callee.start(procs, seconds=CALL_SECONDS + 6)
    caller.start(procs, seconds=CALL_SECONDS, dial=target)
    wait_call(caller, callee, timeout=CALL_SECONDS + 20)
    secure_cap.stop()
    legacy_cap.stop()
    assert caller.established() and callee.established(), procs.tails()
    return secure_cap, legacy_cap


def _check(scene: Scene, suite: str, keyed: str, secure_cap: Capture,
           legacy_cap: Capture) -> None:
    """``keyed``: the line the secure phone logs once its SRTP keys are in place."""
    secure, legacy = scene.secure, scene.legacy
    # Each side heard the other's tone for most of the call, and not its own.
    assert tone_coverage(read_samples(secure.recording()), LEGACY_HZ) > 0.6
    assert tone_coverage(read_samples(legacy.recording()), SECURE_HZ) > 0.6
    assert tone_coverage(read_samples(legacy.recording()), LEGACY_HZ) < 0.05
    assert keyed in secure.log()
    assert "SRTP is Enabled" not in legacy.log()

    # Secure side: media flows, but none of it is plain RTP or decodes to either tone.
    secure_udp = secure_cap.udp()
    rtp = rtp_packets(d.payload for d in secure_udp)
    assert len(rtp) > 100
    assert plain_pcmu(rtp) == []
    assert trailer_lengths(rtp) == {TAG_LENGTH[suite]}  # every packet carries the suite's tag
    assert audible_tone(rtp, SECURE_HZ) < 0.05 and audible_tone(rtp, LEGACY_HZ) < 0.05
    assert sip_texts(d.payload for d in secure_udp) == []
    tcp = [d.payload for d in secure_cap.tcp()]
    assert tcp and sip_texts(tcp) == []

    # Legacy side: clear SIP without SDES keys, plain RTP carrying the secure phone's tone.
    legacy_udp = legacy_cap.udp()
    sip = sip_texts(d.payload for d in legacy_udp)
    assert any(b"m=audio" in s for s in sip)
    assert not any(b"a=crypto" in s or b"RTP/SAVP" in s or b"a=fingerprint" in s for s in sip)
    to_legacy = [d.payload for d in legacy_udp
                 if legacy.rtp_min <= d.dport < legacy.rtp_min + RTP_SPAN]
    assert audible_tone(plain_pcmu(to_legacy), SECURE_HZ) > 0.6


@pytest.mark.parametrize("suite", BARESIP_SUITES)
def test_legacy_calls_secure_through_gateway(suite: str, tmp_path: Path, procs: Procs,
                                             pki: Pki) -> None:
    scene = _scene(tmp_path, procs, pki, suite)
    caps = _run_call(tmp_path, procs, scene, scene.legacy, scene.secure,
                     f"sip:carrier@{scene.gateway.udp_uri_host}")
    _check(scene, suite, f"SRTP is Enabled (cryptosuite={suite})", *caps)


def test_secure_calls_legacy_through_gateway(tmp_path: Path, procs: Procs, pki: Pki) -> None:
    scene = _scene(tmp_path, procs, pki, BARESIP_OFFERS)
    caps = _run_call(tmp_path, procs, scene, scene.secure, scene.legacy,
                     f"sip:pbx@{scene.gateway.tls_uri_host}")
    _check(scene, BARESIP_OFFERS, f"SRTP is Enabled (cryptosuite={BARESIP_OFFERS})", *caps)


@pytest.mark.parametrize("direction", ["legacy_calls_secure", "secure_calls_legacy"])
def test_dtls_srtp_baresip_through_gateway(direction: str, tmp_path: Path, procs: Procs,
                                           pki: Pki) -> None:
    scene = _scene(tmp_path, procs, pki, BARESIP_OFFERS, dtls=True)
    if direction == "legacy_calls_secure":
        caps = _run_call(tmp_path, procs, scene, scene.legacy, scene.secure,
                         f"sip:carrier@{scene.gateway.udp_uri_host}")
    else:
        caps = _run_call(tmp_path, procs, scene, scene.secure, scene.legacy,
                         f"sip:pbx@{scene.gateway.tls_uri_host}")
    _check(scene, BARESIP_OFFERS,
           "DTLS-SRTP complete (audio/RTP) Profile=AES_CM_128_HMAC_SHA1_80", *caps)


def _inline_keys(log: str) -> set[str]:
    return set(re.findall(r"a=crypto:\d+ \S+ inline:([A-Za-z0-9+/=]+)", log))


@dataclass
class SecurePair:
    """Two TLS phones on two secure trunks: ``east`` on "carrier", ``west`` on "pbx"."""

    gateway: Gateway
    east: Softphone
    west: Softphone


def _secure_pair(tmp_path: Path, procs: Procs, pki: Pki, *, east_mediaenc: str = "srtp-mand",
                 west_identity: str = "peer.srtpgw.test") -> SecurePair:
    for tool in ("baresip", "tshark"):
        require_tool(tool)
    tls = dict(workdir=tmp_path, ca_file=pki.keys.ca_cert)
    east = Softphone("carrier", tone_hz=SECURE_HZ, certificate=pki.peer_pem,
                     mediaenc=east_mediaenc, **tls)
    west_pem = pki.peer_pem if west_identity == "peer.srtpgw.test" else pki.mint_peer(
        west_identity)
    west = Softphone("pbx", tone_hz=LEGACY_HZ, certificate=west_pem, mediaenc="srtp-mand",
                     **tls)
    gw = Gateway(tmp_path, pki.keys.dir, legacy_peer=f"{west.address}:{west.tls_port}",
                 secure_peer=f"{east.address}:{east.tls_port}",
                 legacy_sources=[f"{west.address}/32"], secure_sources=[f"{east.address}/32"],
                 legacy_secure=True, pbx_identity=west_identity,
                 secure_media="dtls-srtp" if east_mediaenc == "dtls_srtp" else "srtp")
    gw.start(procs)
    return SecurePair(gw, east, west)


def _call_secure_pair(tmp_path: Path, procs: Procs, pair: SecurePair, *, east_calls: bool
                      ) -> tuple[Capture, Capture]:
    """One call between the two phones; both legs captured. Tones heard both ways, and on
    neither leg any plain RTP, audible tone, or a tag length other than the suite's."""
    east, west, gw = pair.east, pair.west, pair.gateway
    east_cap = Capture(procs, tmp_path, "east", east.capture_filter)
    west_cap = Capture(procs, tmp_path, "west", west.capture_filter)
    caller, callee = (east, west) if east_calls else (west, east)
    target = f"sip:pbx@{gw.tls_uri_host}" if east_calls else f"sip:carrier@{gw.udp_uri_host}"
    callee.start(procs, seconds=CALL_SECONDS + 6)
    caller.start(procs, seconds=CALL_SECONDS, dial=target)
    wait_call(caller, callee, timeout=CALL_SECONDS + 20)
    east_cap.stop()
    west_cap.stop()
    assert east.established() and west.established(), procs.tails()
    assert tone_coverage(read_samples(east.recording()), LEGACY_HZ) > 0.6
    assert tone_coverage(read_samples(west.recording()), SECURE_HZ) > 0.6
    for cap in (east_cap, west_cap):
        rtp = rtp_packets(d.payload for d in cap.udp())
        assert len(rtp) > 100
        assert plain_pcmu(rtp) == []
        assert trailer_lengths(rtp) == {TAG_LENGTH[BARESIP_OFFERS]}
        assert audible_tone(rtp, SECURE_HZ) < 0.05 and audible_tone(rtp, LEGACY_HZ) < 0.05
    return east_cap, west_cap


@pytest.mark.parametrize("west_identity", ["west.srtpgw.test", "peer.srtpgw.test"])
def test_srtp_to_srtp_rekeys_each_leg(west_identity: str, tmp_path: Path, procs: Procs,
                                      pki: Pki) -> None:
    """Two SDES peers on two secure trunks: tones pass, and no key crosses from one leg to the
    other (rtpengine passes an offerer's key through unless told to recrypt; we never do).
    With the same certificate identity on both peers (one carrier, two SBCs on one address)
    each call must still reach the trunk's own peer."""
    pair = _secure_pair(tmp_path, procs, pki, west_identity=west_identity)
    _call_secure_pair(tmp_path, procs, pair, east_calls=True)
    east_keys, west_keys = _inline_keys(pair.east.log()), _inline_keys(pair.west.log())
    assert len(east_keys) >= 2 and len(west_keys) >= 2  # each leg: the phone's and ours
    assert east_keys.isdisjoint(west_keys)


@pytest.mark.parametrize("east_calls", [True, False], ids=["dtls_calls_sdes", "sdes_calls_dtls"])
def test_dtls_srtp_to_sdes_srtp_through_gateway(east_calls: bool, tmp_path: Path, procs: Procs,
                                                pki: Pki) -> None:
    """A DTLS-SRTP phone and an SDES-SRTP phone, each on its own secure trunk: the gateway keys
    each leg its own way (DTLS exporter on one, fresh SDES keys on the other) and both hear."""
    pair = _secure_pair(tmp_path, procs, pki, east_mediaenc="dtls_srtp")
    _call_secure_pair(tmp_path, procs, pair, east_calls=east_calls)
    assert "DTLS-SRTP complete (audio/RTP) Profile=AES_CM_128_HMAC_SHA1_80" in pair.east.log()
    assert f"SRTP is Enabled (cryptosuite={BARESIP_OFFERS})" in pair.west.log()
    assert _inline_keys(pair.east.log()) == set()  # no SDES key ever reached the DTLS leg


def test_hold_and_resume_through_gateway(tmp_path: Path, procs: Procs, pki: Pki) -> None:
    """The TLS/SDES phone puts the call on hold and resumes it (two re-INVITEs through the
    gateway); both directions of audio are back after the resume."""
    scene = _scene(tmp_path, procs, pki, BARESIP_OFFERS)
    secure, legacy = scene.secure, scene.legacy
    call_seconds = 10
    legacy.start(procs, seconds=call_seconds + 6)
    proc = secure.start(procs, seconds=call_seconds, dial=f"sip:pbx@{scene.gateway.tls_uri_host}")
    wait_log(proc, "Call established", 10)
    time.sleep(2)
    assert secure.command("hold")["ok"]
    time.sleep(1.5)
    assert secure.command("resume")["ok"]
    wait_call(secure, legacy, timeout=call_seconds + 20)

    def directions(log: str, method: str) -> list[str]:
        """a= direction of each ``method`` request in a baresip SIP trace, in order."""
        out, inside = [], False
        for line in log.splitlines():
            line = line.strip()
            if re.match(r"^(SIP/2\.0 |[A-Z]+ sips?:)", line):
                inside = line.startswith(f"{method} ")
            elif inside and re.fullmatch(r"a=(sendrecv|sendonly|recvonly|inactive)", line):
                out.append(line[2:])
                inside = False
        return out

    assert directions(legacy.log(), "INVITE") == ["sendrecv", "sendonly", "sendrecv"]
    tail = 2 * 8000  # the last two seconds, well after the resume
    assert tone_coverage(read_samples(legacy.recording())[-tail:], SECURE_HZ) > 0.6
    assert tone_coverage(read_samples(secure.recording())[-tail:], LEGACY_HZ) > 0.6
