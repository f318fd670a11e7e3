"""baresip over TLS + DTLS-SRTP <-> srtpgw (``srtpgw run``) <-> baresip over UDP + plain RTP.

The whole gateway this time: the carrier trunk is ``media = "dtls-srtp"``, so the B2BUA offers
or answers with our fingerprint and runs the handshake on the relay leg. Each phone plays its own
tone and must hear the other's; tshark on the secure side must see the DTLS handshake and no
plain RTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from tests.conftest import require_tool
from tests.interop.baresip import Softphone, wait_all
from tests.interop.capture import Capture
from tests.interop.conftest import Pki
from tests.interop.gateway import Gateway
from tests.interop.procs import Procs
from tests.interop.test_baresip_dtls import MuxPhone
from tests.interop.tone import read_samples, tone_coverage
from tests.interop.wire import audible_tone, plain_pcmu, rtp_packets

pytestmark = pytest.mark.interop

CALL_SECONDS = 7
SECURE_HZ = 1000
LEGACY_HZ = 600


class DtlsGateway(Gateway):
    """The interop gateway with its carrier trunk switched from SDES to DTLS-SRTP."""

    def write_config(self) -> Path:
        path = super().write_config()
        text = path.read_text()
        assert text.count('media = "srtp"') == 1
        path.write_text(text.replace('media = "srtp"', 'media = "dtls-srtp"'))
        load_config(path)
        return path


def run_call(tmp_path: Path, procs: Procs, pki: Pki, secure_calls: bool
             ) -> tuple[Softphone, Softphone, Capture]:
    for tool in ("baresip", "tshark"):
        require_tool(tool)
    secure = MuxPhone("carrier", workdir=tmp_path, tone_hz=SECURE_HZ, mediaenc="dtls_srtp",
                      certificate=pki.peer_pem, ca_file=pki.keys.ca_cert)
    legacy = Softphone("pbx", workdir=tmp_path, tone_hz=LEGACY_HZ)
    gw = DtlsGateway(tmp_path, pki.keys.dir,
                     legacy_peer=f"{legacy.address}:{legacy.port}",
                     secure_peer=f"{secure.address}:{secure.tls_port}",
                     legacy_sources=[f"{legacy.address}/32"],
                     secure_sources=[f"{secure.address}/32"])
    gw.start(procs)
    cap = Capture(procs, tmp_path, "secure", secure.capture_filter)
    caller, callee = (secure, legacy) if secure_calls else (legacy, secure)
    target = (f"sip:pbx@{gw.tls_uri_host}" if secure_calls
              else f"sip:carrier@{gw.udp_uri_host}")
    callee.start(procs, seconds=CALL_SECONDS + 8)
    caller.start(procs, seconds=CALL_SECONDS, dial=target)
    wait_all([caller, callee], timeout=CALL_SECONDS + 20)
    cap.stop()
    assert caller.established() and callee.established(), procs.tails()
    return secure, legacy, cap


def check(secure: Softphone, legacy: Softphone, cap: Capture) -> None:
    assert "DTLS-SRTP complete" in secure.log(), secure.log()[-3000:]
    assert tone_coverage(read_samples(secure.recording()), LEGACY_HZ) > 0.6
    assert tone_coverage(read_samples(legacy.recording()), SECURE_HZ) > 0.6
    udp = [d.payload for d in cap.udp()]
    assert any(p[:1] == b"\x16" for p in udp)  # DTLS handshake records on the media port
    rtp = rtp_packets(udp)
    assert len(rtp) > 100
    assert plain_pcmu(rtp) == []
    assert audible_tone(rtp, SECURE_HZ) < 0.05 and audible_tone(rtp, LEGACY_HZ) < 0.05


def test_legacy_calls_dtls_carrier_through_gateway(tmp_path: Path, procs: Procs,
                                                   pki: Pki) -> None:
    check(*run_call(tmp_path, procs, pki, secure_calls=False))


def test_dtls_carrier_calls_legacy_through_gateway(tmp_path: Path, procs: Procs,
                                                   pki: Pki) -> None:
    check(*run_call(tmp_path, procs, pki, secure_calls=True))
