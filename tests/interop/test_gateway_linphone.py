"""linphonec (a TLS client only, like most mobile softphones) <-> srtpgw <-> baresip (UDP, RTP).

Flow A: the linphone calls over TLS with its client certificate and SDES-SRTP; the far side
hangs up, and the gateway's BYE must reach the linphone over the connection it opened (belle-sip
closes inbound TLS) and be answered 200. Each phone plays its own tone and must hear the other's.
Flow B: the linphone registers over TLS (the carrier trunk has ``registrar = true``), baresip
calls it, and the call reaches it over its registered flow.
The linphone dials a DNS name of the gateway's certificate: mbedtls does not match IP SANs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.ops.keys import DEFAULT_DOMAIN, load_private_key, make_leaf
from tests.conftest import require_tool
from tests.interop.baresip import Softphone
from tests.interop.conftest import Pki
from tests.interop.gateway import Gateway
from tests.interop.linphone import Linphone, read_recording
from tests.interop.procs import Procs, free_port, wait_log
from tests.interop.tone import read_samples, tone_coverage

pytestmark = pytest.mark.interop

GATEWAY_HOST = "localhost"   # a DNS name in the gateway's certificate that resolves to it
LINPHONE_HZ = 1000
BARESIP_HZ = 600
TALK_SECONDS = 5.0


@dataclass
class Scene:
    gateway: Gateway
    linphone: Linphone
    baresip: Softphone


def _gateway_cert_for(pki: Pki, host: str) -> None:
    """Reissue the gateway's certificate with ``host`` as a DNS SAN, as a deployment must for
    the names its phones dial."""
    keys = pki.keys
    ca_cert = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    key, cert = make_leaf(load_private_key(keys.dir / "ca.key"), ca_cert, DEFAULT_DOMAIN,
                          dns=[DEFAULT_DOMAIN, host], uris=[f"sip:{DEFAULT_DOMAIN}"])
    keys.gateway_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keys.gateway_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))


def _scene(tmp_path: Path, procs: Procs, pki: Pki, media_encryption: str = "srtp",
           ipv6: bool = False, register: bool = False, best_effort: bool = False) -> Scene:
    for tool in ("linphonec", "baresip"):
        require_tool(tool)
    _gateway_cert_for(pki, GATEWAY_HOST)
    baresip = Softphone("pbx", workdir=tmp_path, tone_hz=BARESIP_HZ)
    linphone = Linphone("phone", tmp_path, LINPHONE_HZ, pki.keys.peer_cert, pki.keys.peer_key,
                        pki.keys.ca_cert, media_encryption=media_encryption, ipv6=ipv6,
                        best_effort=best_effort)
    # nothing listens at the trunk's peer port: the old way (BYE to the trunk's port) fails
    gw = Gateway(tmp_path, pki.keys.dir, legacy_peer=f"{baresip.address}:{baresip.port}",
                 secure_peer=f"127.0.0.1:{free_port('127.0.0.1', udp=False)}",
                 legacy_sources=[f"{baresip.address}/32"], secure_sources=["127.0.0.1/32"],
                 suites=["AES_CM_128_HMAC_SHA1_80"], address="127.0.0.1",
                 secure_media="dtls-srtp" if media_encryption == "dtls" else "srtp",
                 secure_extra=[*(["registrar = true"] if register else []),
                               # DTLS toward a dual-stack offer: answer passive, learn the
                               # address its ClientHello comes from
                               *(["nat_learning = true"] if ipv6 else [])])
    if register:
        linphone.register_at = f"<sip:{GATEWAY_HOST}:{gw.tls_port};transport=tls>"
    gw.start(procs)
    return Scene(gw, linphone, baresip)


@pytest.mark.parametrize("best_effort", [False, True], ids=["sdes", "capneg-best-effort"])
def test_linphone_calls_far_side_hangs_up(best_effort: bool, tmp_path: Path, procs: Procs,
                                          pki: Pki) -> None:
    """With ``best_effort`` linphone offers RTP/AVP and its SDES keys only as RFC 5939
    capabilities; the SRTP trunk takes the SRTP configuration and answers with a=acfg."""
    scene = _scene(tmp_path, procs, pki, media_encryption="none" if best_effort else "srtp",
                   best_effort=best_effort)
    gw, phone, far = scene.gateway, scene.linphone, scene.baresip
    far.start(procs, seconds=TALK_SECONDS + 30)
    phone.start(procs)
    phone.command(f"call sip:pbx@{GATEWAY_HOST}:{gw.tls_port};transport=tls")
    assert far.proc is not None
    wait_log(far.proc, "Call established", 15)
    time.sleep(TALK_SECONDS)
    far.command("hangup")
    phone.wait_log("ended (", 10)
    time.sleep(0.5)
    phone.quit()
    far.proc.stop()
    log = phone.log()
    # belle-sip answers the gateway's BYE (it spells the reason "Ok")
    assert "BYE sip:" in log and "SIP/2.0 200 OK" in log.split("BYE sip:", 1)[1].upper(), \
        procs.tails()
    assert gw.proc is not None
    gw_log = gw.proc.output()
    assert "sip.send_failed" not in gw_log and "tls.handshake_failed" not in gw_log, gw_log
    assert gw.status()["calls"]["active"] == 0
    if best_effort:
        offer = log.split("INVITE sip:", 1)[1]
        assert "RTP/AVP" in offer and "a=acap:" in offer and "a=pcfg:" in offer, procs.tails()
        assert "a=acfg:" in log and "RTP/SAVP" in log.split("SIP/2.0 200", 1)[1], procs.tails()
    assert tone_coverage(read_recording(phone.record), BARESIP_HZ) > 0.6
    assert tone_coverage(read_samples(far.recording()), LINPHONE_HZ) > 0.6


def _wait_binding(gw: Gateway, user: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [b for b in gw.status()["bindings"] if b["user"] == user]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{user} never registered: {gw.status()['bindings']}")


def test_registered_linphone_is_called_over_its_flow(tmp_path: Path, procs: Procs,
                                                      pki: Pki) -> None:
    scene = _scene(tmp_path, procs, pki, register=True)
    gw, phone, far = scene.gateway, scene.linphone, scene.baresip
    phone.start(procs, auto_answer=True)
    binding = _wait_binding(gw, phone.name)
    assert binding["trunk"] == "carrier" and binding["transport"] == "tls"
    far.start(procs, seconds=TALK_SECONDS, dial=f"sip:{phone.name}@{gw.udp_uri_host}")
    assert far.proc is not None
    wait_log(far.proc, "Call established", 15)
    far.wait(TALK_SECONDS + 10)                    # baresip hangs up and quits by itself
    phone.wait_log("ended (", 10)
    time.sleep(0.5)
    phone.quit()
    log = phone.log()
    assert "INVITE sip:" in log and "BYE sip:" in log, procs.tails()
    assert gw.proc is not None
    gw_log = gw.proc.output()
    assert "sip.send_failed" not in gw_log and "tls.handshake_failed" not in gw_log, gw_log
    assert tone_coverage(read_recording(phone.record), BARESIP_HZ) > 0.6
    assert tone_coverage(read_samples(far.recording()), LINPHONE_HZ) > 0.6


def test_linphone_dtls_srtp_dual_stack_offer(tmp_path: Path, procs: Procs, pki: Pki) -> None:
    """linphone's default on a dual-stack host: DTLS-SRTP offered ``actpass`` at ``c=IN IP6``
    while it sends from 127.0.0.1. The gateway answers passive and learns its address."""
    scene = _scene(tmp_path, procs, pki, media_encryption="dtls", ipv6=True)
    gw, phone, far = scene.gateway, scene.linphone, scene.baresip
    far.start(procs, seconds=TALK_SECONDS + 30)
    phone.start(procs)
    phone.command(f"call sip:pbx@{GATEWAY_HOST}:{gw.tls_port};transport=tls")
    assert far.proc is not None
    wait_log(far.proc, "Call established", 15)
    time.sleep(TALK_SECONDS)
    far.command("hangup")
    phone.wait_log("ended (", 10)
    time.sleep(0.5)
    phone.quit()
    far.proc.stop()
    log = phone.log()
    offer = log.split("INVITE sip:", 1)[1]
    assert "c=IN IP6" in offer and "a=setup:actpass" in offer, procs.tails()
    assert "a=setup:passive" in log, procs.tails()
    assert gw.proc is not None
    assert "media.send_raw_failed" not in gw.proc.output(), gw.proc.output()
    assert tone_coverage(read_recording(phone.record), BARESIP_HZ) > 0.6
    assert tone_coverage(read_samples(far.recording()), LINPHONE_HZ) > 0.6
