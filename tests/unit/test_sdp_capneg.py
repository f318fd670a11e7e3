"""RFC 5939 capability negotiation for best-effort SRTP offers (gateway.sdp.capneg), shaped
like linphone's: RTP/AVP with the keys only in a=acap, a=tcap and a=pcfg."""

from __future__ import annotations

from gateway.media.api import generate_params
from gateway.sdp import parse_sdp
from gateway.sdp.capneg import apply_srtp_capabilities
from gateway.sdp.offer_answer import (
    LegPolicy,
    OurStream,
    build_answer,
    build_offer,
    new_origin,
    read_offer,
)

K1 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVpBQkNE"
K2 = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXphYmNk"
BEST_EFFORT = (
    "v=0\r\no=linphone 1 1 IN IP4 127.0.0.1\r\ns=Talk\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "a=tcap:1 RTP/SAVPF RTP/SAVP\r\n"
    "m=audio 7078 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    f"a=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{K1}\r\n"
    f"a=acap:2 crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{K2}\r\n"
    "a=pcfg:2 t=2 a=1|2\r\na=pcfg:8 t=1 a=1\r\n")


def test_first_srtp_configuration_becomes_the_offer_and_the_answer_names_it() -> None:
    sdp = parse_sdp(BEST_EFFORT)
    taken = apply_srtp_capabilities(sdp, srtp_allowed=True)
    m = sdp.media[0]
    assert m.proto == "RTP/SAVP" and len(m.get_all("crypto")) == 2
    assert not any(a.name in ("acap", "tcap", "pcfg") for a in m.attributes + sdp.attributes)
    nego = read_offer(sdp, LegPolicy("srtp", suites=("AES_CM_128_HMAC_SHA1_80",)))
    s = nego.streams[0]
    assert s.accepted and s.crypto_tag == 1
    acfg = taken[0].acfg(s.crypto_tag)
    assert acfg is not None and acfg.value == "2 t=2 a=1"
    key = generate_params("AES_CM_128_HMAC_SHA1_80")
    answer = build_answer(nego, sdp, [OurStream(("127.0.0.1", 4000), ("127.0.0.1", 4001),
                                                keys=(key,), attributes=(acfg,))],
                          LegPolicy("srtp"), new_origin("127.0.0.1"))
    text = answer.to_bytes().decode()
    assert "m=audio 4000 RTP/SAVP" in text and "a=acfg:2 t=2 a=1" in text
    assert text.count("a=crypto:") == 1 and K1 not in text


def test_capabilities_never_cross_to_the_other_leg() -> None:
    for allowed in (False, True):
        sdp = parse_sdp(BEST_EFFORT)
        apply_srtp_capabilities(sdp, srtp_allowed=allowed)
        nego = read_offer(sdp, LegPolicy("srtp-optional" if allowed else "rtp"))
        offer = build_offer(nego.sdp, [OurStream(("127.0.0.1", 4000), ("127.0.0.1", 4001))],
                            LegPolicy("rtp"), new_origin("127.0.0.1")).to_bytes().decode()
        assert "inline:" not in offer and "acap" not in offer and "pcfg" not in offer


def test_plain_leg_keeps_rtp_and_strange_configurations_are_ignored() -> None:
    sdp = parse_sdp(BEST_EFFORT)
    assert apply_srtp_capabilities(sdp, srtp_allowed=False) == {}
    assert sdp.media[0].proto == "RTP/AVP" and not sdp.media[0].get_all("crypto")
    odd = BEST_EFFORT.replace("a=pcfg:2 t=2 a=1|2\r\na=pcfg:8 t=1 a=1\r\n",
                              "a=pcfg:1 t=9 a=1\r\na=pcfg:x\r\na=pcfg:3 t=1 a=1,2\r\n")
    sdp = parse_sdp(odd)
    assert apply_srtp_capabilities(sdp, srtp_allowed=True) == {}
    assert sdp.media[0].proto == "RTP/AVP"
