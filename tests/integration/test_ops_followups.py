"""Issue #8 follow-ups through the running gateway: codec and suite in CDRs, SIP response and
TLS handshake metrics, Retry-After while draining, all-or-nothing reload with an unusable DTLS
certificate, and a media timeout that fires while the call is still ringing.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from gateway.ops.demo_phone import DemoPhone
from gateway.ops.status import request
from tests.integration.test_calls import DOMAIN, establish, media_both_ways
from tests.integration.test_calls import Rig as CallRig
from tests.integration.test_calls import rig as call_rig
from tests.support.dtls_peer import BaresipLikePeer, handshaking_answerer
from tests.support.phone import answerer, apply_answer, plain_offer
from tests.support.rtp import RtpEndpoint

from .test_ops_admin import get, http
from .test_ops_gateway import CONFIG, Rig, rig, scrape, wait_for

__all__ = ["call_rig", "rig"]


async def test_cdr_names_codec_per_leg_and_suite_on_the_secure_leg(rig: Rig) -> None:
    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    await wait_for(lambda: rig.secure.report.suite is not None)
    (call,) = rig.gw.calls.values()
    assert call.a.media.codec == call.b.media.codec == "PCMU"   # exposed while the call runs
    assert call.a.media.suite is None and call.b.media.suite == rig.secure.report.suite
    _, doc = await asyncio.to_thread(request, rig.admin, "GET", "/status")
    (listed,) = doc["calls"]["list"]
    assert listed["codec"] == ["PCMU", "PCMU"]
    assert listed["suite"] == [None, rig.secure.report.suite]
    assert await rig.legacy.hangup() == 200
    await wait_for(lambda: bool(rig.cdrs()))
    (cdr,) = rig.cdrs()
    legacy_leg, secure_leg = cdr["legs"]  # type: ignore[misc]
    assert legacy_leg["codec"] == "PCMU" and legacy_leg["suite"] is None
    assert secure_leg["codec"] == "PCMU"
    assert secure_leg["suite"] == rig.secure.report.suite
    assert secure_leg["suite"] in ("AEAD_AES_256_GCM", "AEAD_AES_128_GCM",
                                   "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    assert "inline" not in json.dumps(cdr)


@pytest.mark.parametrize("call_rig", [{"trunks": {"carrier2": {"media": "dtls-srtp"}}}],
                         indirect=True)
async def test_dtls_leg_reports_the_exported_profile(call_rig: CallRig) -> None:
    """On a DTLS-SRTP leg the suite is known only when the handshake exports the keys."""
    rig = call_rig
    peer = BaresipLikePeer("client")
    rig.carrier2.uas.answer, handshake = handshaking_answerer(peer)
    pbx_ep = await RtpEndpoint.open()
    try:
        call = await rig.pbx.invite(f"sip:8100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
        assert (await call.wait_final(5)).status == 200
        await asyncio.wait_for(handshake[0], 8)
        assert peer.error is None
        (ours,) = rig.gw.calls.values()
        await wait_for(lambda: ours.b.media.suite is not None)
        assert ours.b.media.suite == "AES_CM_128_HMAC_SHA1_80"   # the peer's only profile
        assert ours.b.media.codec == ours.a.media.codec == "PCMU"
        assert ours.a.media.suite is None
        await call.bye(3)
        await rig.settle()
        rig.assert_clean()
    finally:
        pbx_ep.close()
        peer.close()


def _responses(m: dict[str, dict[tuple[tuple[str, str], ...], float]], direction: str,
               method: str, status_class: str, transport: str) -> float:
    key = (("direction", direction), ("method", method), ("status_class", status_class),
           ("transport", transport))
    return m.get("srtpgw_sip_responses_total", {}).get(key, 0.0)


async def test_sip_responses_and_tls_handshakes_reach_metrics(rig: Rig) -> None:
    # Only numbers starting 49 are routed from the PBX: anything else gets 404.
    text = CONFIG.format(**rig.values).replace(
        'route_to = "carrier"\n', '\n[[trunk.route]]\nprefix = "49"\nto = "carrier"\n', 1)
    rig.path.write_text(text)
    code, _, body = await http(rig.admin, rig.reload_request)
    assert code == 200, body

    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    assert await rig.legacy.hangup() == 200
    await asyncio.wait_for(rig.secure.ended.wait(), 5)
    lost = DemoPhone("lost-phone", b"LOST-", transport="udp", media="rtp")
    await lost.start()
    try:
        host, port = rig.gw.stack.bound("udp")
        assert await lost.call((host, port), f"sip:555@{host}:{port}") == 404
    finally:
        await lost.close()

    # An inbound TLS handshake that fails (plain text to the TLS listener).
    with socket.create_connection(rig.gw.stack.bound("tls"), timeout=2) as s:
        s.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        s.settimeout(3)
        try:
            while s.recv(1024):
                pass
        except OSError:
            pass
    await wait_for(lambda: rig.gw.stack.transports.counters["tls_failures"] >= 1)

    m = scrape((await get(rig.admin, "/metrics"))[2])
    # sent to the caller over UDP: the 200 to its INVITE and BYE, the 404
    assert _responses(m, "sent", "INVITE", "2xx", "udp") == 1
    assert _responses(m, "sent", "BYE", "2xx", "udp") == 1
    assert _responses(m, "sent", "INVITE", "4xx", "udp") == 1
    # received from the callee over TLS: its 200 to our INVITE and BYE
    assert _responses(m, "received", "INVITE", "2xx", "tls") == 1
    assert _responses(m, "received", "BYE", "2xx", "tls") == 1
    assert _responses(m, "received", "INVITE", "4xx", "tls") == 0
    hs = m["srtpgw_tls_handshakes_total"]
    assert hs[(("result", "ok"),)] == 1   # our one connection to the secure phone
    assert hs[(("result", "failed"),)] == 1
    assert sum(m["srtpgw_tls_handshake_failures_total"].values()) == 1


@pytest.mark.parametrize("rig", [12.0], indirect=True)
async def test_drain_retry_after_is_the_time_left(rig: Rig) -> None:
    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    rig.ops.request_drain()
    await asyncio.sleep(1.2)
    late = DemoPhone("late-phone", b"LATE-", transport="udp", media="rtp")
    await late.start()
    try:
        assert await rig.call(late) == 503
        assert late.last_final is not None
        retry = int(late.last_final.headers.get("Retry-After") or "0")
    finally:
        await late.close()
    assert 9 <= retry <= 11   # 12 s drain, a little over one second gone
    assert await rig.legacy.hangup() == 200
    await asyncio.wait_for(rig.stopped.wait(), 3)


def _ed25519_pair(directory: Path) -> tuple[Path, Path]:
    """A well-formed certificate and key TLS accepts but DTLS-SRTP cannot use (Ed25519)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dtls.srtpgw.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, None))
    crt, pem = directory / "dtls-ed25519.crt", directory / "dtls-ed25519.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


async def test_reload_with_unusable_dtls_certificate_changes_nothing(rig: Rig) -> None:
    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    gw = rig.gw
    old, old_stack, old_b2bua = gw.config, gw.stack.config, gw.b2bua.config
    old_dtls = gw.b2bua.dtls
    crt, key = _ed25519_pair(Path(str(rig.values["dir"])))
    text = CONFIG.format(**{**rig.values, "max_calls": 3}).replace(
        "[media]", f'[dtls]\ncertificate = "{crt}"\nprivate_key = "{key}"\n\n[media]')
    text += ('\n[[trunk]]\nname = "webrtc"\nside = "secure"\nlistener = "tls"\n'
             'transport = "tls"\npeer = "127.0.0.3:5061"\n'
             'tls_identity = ["sip:peer.srtpgw.test"]\n'
             'allowed_sources = ["127.0.0.3/32"]\nmedia = "dtls-srtp"\nroute_to = "pbx"\n')
    rig.path.write_text(text)
    code, _, body = await http(rig.admin, rig.reload_request)
    assert code == 409, body
    assert "only ECDSA and RSA" in json.loads(body)["error"]
    assert gw.config is old and gw.stack.config is old_stack and gw.b2bua.config is old_b2bua
    assert gw.stack.transports.config is old_stack and gw.b2bua.dtls is old_dtls
    assert gw.config.trunk("carrier").max_calls == 10
    before = rig.secure.report.received
    await wait_for(lambda: rig.secure.report.received > before + 3)   # the call carries on
    assert await rig.legacy.hangup() == 200
    await asyncio.wait_for(rig.secure.ended.wait(), 5)


async def test_reload_with_an_unopenable_log_file_changes_nothing(rig: Rig,
                                                                tmp_path: Path) -> None:
    gw = rig.gw
    old, old_stack = gw.config, gw.stack.config
    missing = tmp_path / "no-such-dir" / "gw.log"
    text = CONFIG.format(**{**rig.values, "max_calls": 3}).replace(
        "[media]", f'[logging]\nfile = "{missing}"\n\n[media]')
    rig.path.write_text(text)
    code, _, body = await http(rig.admin, rig.reload_request)
    assert code == 409 and "not applied" in json.loads(body)["error"], body
    assert gw.config is old and gw.stack.config is old_stack
    assert gw.config.trunk("carrier").max_calls == 10
    assert not missing.parent.exists()


@pytest.mark.parametrize("call_rig", [{"trunks": {"carrier": {"media_timeout": 1.0}}}],
                         indirect=True)
async def test_media_timeout_while_ringing_ends_the_answered_call(call_rig: CallRig) -> None:
    """The relay reports the idle stream while the callee rings; the call answered without
    media must still end one media timeout after the answer."""
    rig = call_rig
    pbx_ep, car_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(car_ep)
    rig.carrier.uas.invite_statuses = (180, 200)
    rig.carrier.uas.delay = 2.0          # rings for twice the media timeout, no early media
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
    assert (await call.wait_final(5)).status == 200
    answered = time.monotonic()
    assert rig.gw.relay.totals().timeouts >= 1   # reported while ringing
    await call.wait_request("BYE", 4)
    took = time.monotonic() - answered
    incoming = await rig.carrier.wait_call(1)
    await incoming.wait_request("BYE", 2)
    assert 0.9 <= took <= 2.5, took
    assert rig.gw.b2bua.counters["ended.media_timeout"] == 1
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("call_rig", [{"trunks": {"carrier": {"media_timeout": 1.0}}}],
                         indirect=True)
async def test_early_media_between_two_ringing_timeouts(call_rig: CallRig) -> None:
    """Idle, then early media, then idle again, all while ringing: the second report is the
    one the relay will not repeat, so the answered call without media still ends."""
    rig = call_rig
    pbx_ep, car_ep = await rig.endpoints()
    rig.carrier.uas.answer = answerer(car_ep)
    rig.carrier.uas.invite_statuses = (180, 183, 200)
    rig.carrier.uas.delay = 2.0          # 180 at 0 s, 183 at 2 s, 200 at 4 s
    call = await rig.pbx.invite(f"sip:100@{DOMAIN}", rig.udp, plain_offer(pbx_ep))
    early = await call.wait_response(183, 5)
    reported = rig.gw.relay.totals().timeouts
    assert reported >= 1                  # idle before the early media
    apply_answer(pbx_ep, early.body)
    await car_ep.send_stream(5, 0.002)
    await pbx_ep.wait_for_packets(5, 2)
    assert (await call.wait_final(5)).status == 200
    answered = time.monotonic()
    assert rig.gw.relay.totals().timeouts > reported   # idle again before the answer
    await call.wait_request("BYE", 4)
    assert 0.9 <= time.monotonic() - answered <= 2.5
    assert rig.gw.b2bua.counters["ended.media_timeout"] == 1
    await rig.settle()
    rig.assert_clean()


@pytest.mark.parametrize("call_rig", [{"trunks": {"carrier": {"media_timeout": 1.0}}}],
                         indirect=True)
async def test_media_after_a_ringing_timeout_keeps_the_call(call_rig: CallRig) -> None:
    """Media that starts at answer keeps the call up; when it stops, the relay's own timeout
    ends the call again."""
    rig = call_rig
    rig.carrier.uas.invite_statuses = (180, 200)
    rig.carrier.uas.delay = 1.6
    call, incoming, a_ep, b_ep = await establish(rig, rig.pbx, rig.carrier, "100", rig.udp)
    assert rig.gw.relay.totals().timeouts >= 1
    loop = asyncio.get_running_loop()
    until = loop.time() + 1.6
    while loop.time() < until:       # past the answer-time re-check
        await media_both_ways(a_ep, b_ep, 5)
        await asyncio.sleep(0.1)
    assert len(rig.gw.calls) == 1
    await call.wait_request("BYE", 3)   # idle again: the relay reports it, the call ends
    await incoming.wait_request("BYE", 2)
    assert rig.gw.b2bua.counters["ended.media_timeout"] == 1
    await rig.settle()
    rig.assert_clean()
