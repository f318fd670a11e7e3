"""The probe's judging functions on hand-made observations: each weakness is reported, each
good answer passes, and a failed MUST (only) makes the exit code non-zero."""

from __future__ import annotations

import base64
import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.ops.keys import init_keys
from gateway.sip.errors import SipParseError
from gateway.sip.message import SipResponse, parse_message
from gateway.tools.probe import exposure, flood, hello, media, screening, tls, topology
from gateway.tools.probe.findings import Finding
from gateway.tools.probe.report import exit_code, render_json, render_table
from gateway.tools.probe.sipreq import Exchange, ack_for, bye_for, cancel_for, new_request

NOW = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def flight(version: int, suite: int = 0xC02F, compression: int = 0, reneg: bool = True
           ) -> hello.Flight:
    exts = {hello.EXT_RENEGOTIATION_INFO: b"\x00"} if reneg else {}
    return hello.Flight(hello.ServerHello(version, suite, compression, exts), done=True)


REFUSED = hello.Flight(alert=hello.Alert(2, 70), done=True)


def test_old_tls_versions_accepted_fail_a_must() -> None:
    obs = tls.TlsObservations(versions={hello.TLS10: flight(hello.TLS10, 0xC013),
                                        hello.TLS11: REFUSED, hello.TLS12: flight(hello.TLS12),
                                        hello.TLS13: REFUSED})
    got = by_check(tls.judge_versions(obs))
    assert got["tls.version.1.0"].must_failed
    assert "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" in got["tls.version.1.0"].evidence
    assert got["tls.version.1.1"].result == "pass"
    assert "protocol_version" in got["tls.version.1.1"].evidence
    assert got["tls.version.1.3"].must_failed  # 3GPP TS 33.210: 1.3 shall be supported


def test_weak_suites_and_missing_renegotiation_info_are_reported() -> None:
    obs = tls.TlsObservations(
        versions={hello.TLS12: flight(hello.TLS12, 0x009C, reneg=False)},
        suites={"null": REFUSED, "rc4": flight(hello.TLS12, 0x0005),
                "cbc_sha1": flight(hello.TLS12, 0x002F), "static_rsa": REFUSED},
        compression=flight(hello.TLS12, compression=1))
    got = by_check(tls.judge_suites(obs))
    assert got["tls.suites.null"].result == "pass"
    assert got["tls.suites.rc4"].must_failed and "RC4_128_SHA" in got["tls.suites.rc4"].evidence
    assert got["tls.suites.cbc_sha1"].result == "fail" and got["tls.suites.cbc_sha1"].level == (
        "SHOULD")
    assert got["tls.suites.forward_secrecy"].must_failed  # picks TLS_RSA_WITH_AES_128_GCM
    assert tls.judge_compression(obs).must_failed
    assert tls.judge_renegotiation(obs).must_failed


def test_tls13_only_server_passes_suite_and_renegotiation_checks() -> None:
    obs = tls.TlsObservations(versions={v: REFUSED for v in (hello.TLS10, hello.TLS11,
                                                             hello.TLS12)}
                              | {hello.TLS13: flight(hello.TLS13, 0x1302)})
    findings = [*tls.judge_versions(obs), *tls.judge_suites(obs), tls.judge_renegotiation(obs),
                tls.judge_compression(obs)]
    assert [f.check for f in findings if f.result == "fail"] == ["tls.version.1.2"]
    assert exit_code(findings) == 0  # 1.2 is a SHOULD


@pytest.fixture(scope="module")
def leaf_der(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    keys = init_keys(tmp_path_factory.mktemp("k"), domain="sbc.example.net")
    cert = x509.load_pem_x509_certificate(keys.gateway_cert.read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_certificate_san_expiry_and_chain(leaf_der: bytes) -> None:
    obs = tls.TlsObservations(chain=[leaf_der], verified=False, verify_error="unknown ca")
    got = by_check(tls.judge_certificate(obs, "sbc.example.net", NOW))
    assert got["tls.cert.san"].result == "pass"
    assert got["tls.cert.chain"].must_failed and "unknown ca" in got["tls.cert.chain"].evidence
    assert by_check(tls.judge_certificate(obs, "other.example", NOW))["tls.cert.san"].must_failed
    later = NOW + datetime.timedelta(days=3650)
    assert by_check(tls.judge_certificate(obs, "sbc.example.net", later))[
        "tls.cert.expiry"].must_failed
    soon = x509.load_der_x509_certificate(leaf_der).not_valid_after_utc - datetime.timedelta(
        days=5)
    f = by_check(tls.judge_certificate(obs, "sbc.example.net", soon))["tls.cert.expiry"]
    assert f.result == "fail" and f.level == "SHOULD"


def test_mutual_tls_not_enforced_fails() -> None:
    obs = tls.TlsObservations(no_cert=tls.MtlsAttempt(True, answer="200 OK"),
                              foreign_cert=tls.MtlsAttempt(False, error="unknown ca"))
    got = by_check(tls.judge_mtls(obs, "MUST"))
    assert got["tls.mtls.no_cert"].must_failed and "200 OK" in got["tls.mtls.no_cert"].evidence
    assert got["tls.mtls.foreign_ca"].result == "pass"


# --------------------------------------------------------------------------- SIP answers


def req(method: str = "OPTIONS", body: bytes = b""):  # type: ignore[no-untyped-def]
    return new_request(method, "sip:100@sbc.example", ("127.0.0.1", 5070), "udp", body=body)


def answer(request, status: int, reason: str | None = None, extra=(), body: bytes = b""
           ) -> SipResponse:  # type: ignore[no-untyped-def]
    r = request.create_response(status, reason, to_tag="t1")
    for name, value in extra:
        r.headers.add(name, value)
    if body:
        r.headers.add("Content-Type", "application/sdp")
        r.body = body
    return parse_message(r.to_bytes())  # type: ignore[return-value]


def test_requests_built_on_the_gateway_parser_round_trip() -> None:
    invite = req("INVITE", media.build_offer("127.0.0.1", 4000, "RTP/AVP").body)
    assert parse_message(invite.to_bytes()).method == "INVITE"  # type: ignore[union-attr]
    ok = answer(invite, 200, extra=[("Contact", "<sip:a@198.51.100.1>"),
                                    ("Record-Route", "<sip:p1;lr>, <sip:p2;lr>")])
    ack = parse_message(ack_for(invite, ok).to_bytes())
    assert str(ack.uri) == "sip:a@198.51.100.1"  # type: ignore[union-attr]
    assert ack.headers.values("Route") == ["<sip:p2;lr>", "<sip:p1;lr>"]
    assert ack.branch != invite.branch
    fail_ack = ack_for(invite, answer(invite, 488))
    assert fail_ack.branch == invite.branch and str(fail_ack.uri) == str(invite.uri)
    assert parse_message(bye_for(invite, ok).to_bytes()).cseq.number == 2
    assert parse_message(cancel_for(invite).to_bytes()).cseq.method == "CANCEL"


def test_stranger_answers_and_unauthenticated_requests() -> None:
    o = req()
    assert exposure.judge_unknown_source(Exchange(o)).result == "pass"
    assert exposure.judge_unknown_source(Exchange(o, [answer(o, 403)])).result == "fail"
    invite = req("INVITE")
    ringing = Exchange(invite, [answer(invite, 180)])
    assert exposure.judge_unauthenticated("INVITE", ringing).must_failed
    assert exposure.judge_unauthenticated("INVITE", Exchange(invite, [answer(invite, 407)])
                                          ).result == "pass"
    reg = req("REGISTER")
    assert exposure.judge_unauthenticated("REGISTER", Exchange(reg, [answer(reg, 200)])
                                          ).must_failed
    assert exposure.judge_unauthenticated("REGISTER", Exchange(None, error="refused")
                                          ).result == "pass"


def test_enumeration_needs_indistinguishable_answers() -> None:
    o = req()
    same = [Exchange(o, [answer(o, 404)]) for _ in range(2)]
    assert exposure.judge_enumeration(Exchange(o, [answer(o, 404)]), same, "100").result == "pass"
    f = exposure.judge_enumeration(Exchange(o, [answer(o, 200)]), same, "100")
    assert f.result == "fail" and "distinguishable" in f.evidence
    assert exposure.judge_enumeration(None, [], None).result == "skip"


def test_fingerprints_and_leaked_addresses() -> None:
    o = req()
    loud = answer(o, 200, "Keepalive", extra=[("Server", "kamailio (5.6.3)"),
                                              ("Contact", "<sip:100@10.20.0.10:5060>")])
    got = by_check(exposure.judge_fingerprint([loud], "srtpgw-probe"))
    assert "kamailio" in got["exposure.fingerprint_headers"].evidence
    assert "200 Keepalive" in got["exposure.reason_phrases"].evidence
    quiet = answer(o, 200, extra=[("Contact", "<sip:gw@127.0.0.1:5061>")])
    assert all(f.result == "pass" for f in exposure.judge_fingerprint([quiet], "srtpgw-probe"))
    leak = exposure.judge_leaks([loud], {"127.0.0.1"})
    assert leak.result == "fail" and "10.20.0.10" in leak.evidence
    # our own Via comes back in every response and is not a leak
    assert exposure.judge_leaks([quiet], {"127.0.0.1"}).result == "pass"


def test_every_malformed_case_changes_the_message_and_the_screen_judges() -> None:
    base = req().to_bytes()
    rejected = 0
    for case in screening.CASES:
        data = case.mutate(base)
        assert data != base, case.name
        try:
            parse_message(data)
        except SipParseError:
            rejected += 1
    assert rejected >= 8  # the rest are for the policy layer (method/CSeq, URI scheme)
    outs = [screening.Outcome("a", 400, "Bad Request", 0.001),
            screening.Outcome("b", None, "dropped", None)]
    assert all(f.result != "fail" for f in screening.judge_screening(outs, True, "ok"))
    served = screening.judge_screening([screening.Outcome("c", 200, "OK", 0.002)], False, "x")
    assert [f.check for f in served if f.result == "fail"] == [
        "screening.malformed", "screening.liveness"]


def test_flood_judgement() -> None:
    open_door = flood.FloodObservation(sent=300, seconds=0.5,
                                       statuses={i: [200] for i in range(300)})
    assert flood.judge_flood(open_door).result == "fail"
    limited = flood.FloodObservation(sent=300, seconds=0.5, statuses={
        **{i: [200] for i in range(40)}, **{i: [503] for i in range(40, 100)}})
    f = flood.judge_flood(limited)
    assert f.result == "pass" and "#41" in f.evidence and "60 answered 429/503" in f.evidence


def sdp_answer(proto: str, crypto: str = "") -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio 40000 {proto} 0", "a=rtpmap:0 PCMU/8000"]
    if crypto:
        lines.append(crypto)
    return ("\r\n".join(lines) + "\r\n").encode()


def test_media_judgements() -> None:
    offer = media.build_offer("127.0.0.1", 4000, "RTP/SAVP", ("NULL_HMAC_SHA1_80",
                                                              "AES_CM_128_HMAC_SHA1_80"))
    inv = req("INVITE", offer.body)
    plain = Exchange(inv, [answer(inv, 200, body=sdp_answer("RTP/AVP"))])
    assert media.judge_plain_rtp(plain, media.read_answer(plain)).must_failed
    refused = Exchange(inv, [answer(inv, 488)])
    assert media.judge_plain_rtp(refused, media.read_answer(refused)).result == "pass"
    null_key = base64.b64encode(offer.keys[0][2]).decode()
    nulled = Exchange(inv, [answer(inv, 200, body=sdp_answer(
        "RTP/SAVP", f"a=crypto:1 NULL_HMAC_SHA1_80 inline:{null_key}"))])
    assert media.judge_null_suite(nulled, media.read_answer(nulled)).must_failed
    assert media.judge_sdes_insecure(nulled, media.read_answer(nulled), "udp").must_failed
    mirror = base64.b64encode(offer.keys[1][2]).decode()
    echoed = Exchange(inv, [answer(inv, 200, body=sdp_answer(
        "RTP/SAVP", f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{mirror}"))])
    got = by_check(media.judge_key_reuse(echoed, media.read_answer(echoed), offer,
                                         "interconnect"))
    assert got["media.answer_key_reuse"].must_failed
    assert got["media.srtp_answer"].result == "pass"
    assert mirror not in json.dumps([f.to_dict() for f in got.values()])  # keys never shown


def test_topology_marks_and_key_passthrough() -> None:
    offer = media.build_offer("127.0.0.1", 4000, "RTP/SAVP", media.STRONG, mark="prbX")
    key = offer.keys[0][2]
    leaky = new_request("INVITE", "sip:100@pbx", ("127.0.0.5", 5060), "udp",
                        call_id="prbX-cid", extra=[("X-Probe-Mark", "prbX")], body=offer.body)
    back = answer(leaky, 200, extra=[("Contact", "<sip:lgcY@127.0.0.6:5099>")])
    got = by_check(topology.judge_topology("prbX", "lgcY", leaky, back, ["127.0.0.6:5099"],
                                           [key]))
    assert {c for c, f in got.items() if f.result == "fail"} == {
        "topology.secure_to_legacy", "topology.legacy_to_secure", "topology.addresses",
        "topology.key_passthrough"}
    assert "Call-ID" in got["topology.secure_to_legacy"].evidence
    clean = new_request("INVITE", "sip:100@pbx", ("127.0.0.5", 5060), "udp",
                        body=media.build_offer("127.0.0.5", 30000, "RTP/AVP").body)
    ok = by_check(topology.judge_topology("prbX", "lgcY", clean, answer(clean, 200),
                                          ["127.0.0.6:5099"], [key]))
    assert all(f.result == "pass" for f in ok.values())


def test_report_table_json_and_exit_code() -> None:
    findings = [Finding("a.check", "pass", "MUST", "fine", "RFC 1"),
                Finding("b.check", "fail", "SHOULD", "meh " * 30, "RFC 2")]
    meta = {"target": "tls:127.0.0.1:5061", "profile": "interconnect"}
    assert exit_code(findings) == 0
    table = render_table(findings, meta)
    assert "FAIL SHOULD" in table and "-> exit 0" in table
    assert max(len(line) for line in table.splitlines()) <= 140
    findings.append(Finding("c.check", "fail", "MUST", "bad", "RFC 3"))
    doc = json.loads(render_json(findings, meta))
    assert doc["exit"] == 1 and doc["summary"]["fail_must"] == 1
    assert [f["check"] for f in doc["findings"]] == ["a.check", "b.check", "c.check"]
