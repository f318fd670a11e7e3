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


def run_call(tmp_path: Path, procs: Procs, pki: Pki, secure_calls: bool, mux: bool = True,
             seconds: int = CALL_SECONDS) -> tuple[Softphone, Softphone, Capture, Gateway]:
    for tool in ("baresip", "tshark"):
        require_tool(tool)
    phone = MuxPhone if mux else Softphone  # baresip's own default: rtcp_mux no
    secure = phone("carrier", workdir=tmp_path, tone_hz=SECURE_HZ, mediaenc="dtls_srtp",
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
    callee.start(procs, seconds=seconds + 8)
    caller.start(procs, seconds=seconds, dial=target)
    wait_all([caller, callee], timeout=seconds + 20)
    cap.stop()
    assert caller.established() and callee.established(), procs.tails()
    return secure, legacy, cap, gw


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
    check(*run_call(tmp_path, procs, pki, secure_calls=False)[:3])


def test_dtls_carrier_calls_legacy_through_gateway(tmp_path: Path, procs: Procs,
                                                   pki: Pki) -> None:
    check(*run_call(tmp_path, procs, pki, secure_calls=True)[:3])


def is_rtcp(payload: bytes) -> bool:
    return len(payload) >= 8 and 127 < payload[0] < 192 and 199 < payload[1] < 205


@pytest.mark.parametrize("secure_calls", [True, False])
def test_dtls_carrier_without_rtcp_mux(tmp_path: Path, procs: Procs, pki: Pki,
                                       secure_calls: bool) -> None:
    """baresip's default ``rtcp_mux no``: it runs a second DTLS association on its RTCP port
    (RFC 5764 §4.1). Both complete, SRTCP flows both ways between the RTCP ports, no DTLS
    failure anywhere (before: baresip's RTCP handshake timed out and it hung up)."""
    secure, legacy, cap, gw = run_call(tmp_path, procs, pki, secure_calls, mux=False,
                                       seconds=12)
    check(secure, legacy, cap)
    udp = cap.udp()
    hello_ports = {d.sport for d in udp if d.src == secure.address and d.payload[:1] == b"\x16"}
    assert len(hello_ports) == 2, hello_ports  # RTP port and RTCP port
    sent = [d for d in udp if d.src == secure.address and is_rtcp(d.payload)]
    got = [d for d in udp if d.dst == secure.address and is_rtcp(d.payload)]
    assert sent and got, (len(sent), len(got))
    assert {d.sport for d in sent} == {d.dport for d in got}  # its RTCP port, not the RTP one
    rtp_ports = {d.sport for d in udp if d.src == secure.address and d.payload
                 and 127 < d.payload[0] < 192 and not is_rtcp(d.payload)}
    assert rtp_ports and not rtp_ports & {d.sport for d in sent}
    assert gw.proc is not None
    assert "dtls.failed" not in gw.proc.output()
    assert "Connection timed out" not in secure.log()
