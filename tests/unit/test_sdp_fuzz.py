"""Random and mutated SDP: the only exception that may come out is SdpError (400 or 488)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.media.api import generate_params
from gateway.sdp import SdpError, parse_crypto, parse_sdp
from gateway.sdp.offer_answer import (
    LegPolicy,
    Negotiation,
    OurStream,
    build_answer,
    build_offer,
    new_origin,
    offer_keys,
    read_answer,
    read_offer,
)
from tests.support import sdp_samples

POLICIES = [LegPolicy("rtp"), LegPolicy("srtp"), LegPolicy("srtp-optional"),
            LegPolicy("dtls-srtp"), LegPolicy("srtp", accept_unencrypted_srtcp=True,
                                              rtcp_mux=False)]
SAMPLES = list(sdp_samples.ALL.values())
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real-world SDP with lines dropped, duplicated, swapped or bytes flipped."""
    lines = draw(st.sampled_from(SAMPLES)).split(b"\r\n")
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["drop", "dup", "swap", "flip", "cut", "junk"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "flip" and lines[i]:
            k = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:k] + bytes([draw(st.integers(0, 255))]) + lines[i][k + 1:]
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            lines[i] = draw(st.binary(max_size=40))
    return b"\r\n".join(lines)


def _answer_streams(offer: Negotiation) -> list[OurStream | None]:
    """What the B2BUA would pass to build_answer: one key of the chosen suite per SDES stream."""
    return [OurStream(("127.0.0.1", 40000 + 2 * i),
                      keys=(generate_params(s.remote_key.suite),) if s.remote_key else ())
            if s.accepted else None for i, s in enumerate(offer.streams)]


def _exercise(body: bytes) -> None:
    """Everything the B2BUA does with an incoming SDP, under every policy."""
    try:
        sdp = parse_sdp(body)
    except SdpError as exc:
        assert exc.status == 400
        return
    assert parse_sdp(sdp.to_bytes()).to_bytes() == sdp.to_bytes()
    for policy in POLICIES:
        ours = build_offer(sdp, [OurStream(("127.0.0.1", 41000), keys=offer_keys(policy))
                                 for _ in sdp.media], policy, new_origin("127.0.0.1"))
        assert parse_sdp(ours.to_bytes()).to_bytes() == ours.to_bytes()
        try:
            read_answer(ours, body, policy)
        except SdpError as exc:
            assert exc.status == 488
        try:
            offer = read_offer(sdp, policy)
        except SdpError as exc:
            assert exc.status == 488
            continue
        answer = build_answer(offer, sdp, _answer_streams(offer), policy, new_origin("127.0.0.1"))
        assert parse_sdp(answer.to_bytes()).to_bytes() == answer.to_bytes()


LINES = st.sampled_from([
    "c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0", "c=IN IP6 ::1", "t=0 0", "b=AS:64", "i=info",
    "m=audio 5000 RTP/AVP 0", "m=audio 0 RTP/SAVP 0", "m=image 6000 udptl t38",
    "m=video 7 RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVP 0", "m=application 9 TCP/MSRP *",
    "a=rtcp-mux", "a=rtcp:5001", "a=rtcp:5001 IN IP4 192.0.2.2", "a=sendonly", "a=inactive",
    "a=recvonly", "a=ptime:20", "a=rtpmap:0 PCMU/8000", "a=fmtp:101 0-15", "a=setup:actpass",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:uCRNAomB1pOve0Vq+O+kytY9KC4Z/xSULCRuUNk1",
    "a=crypto:2 AEAD_AES_128_GCM inline:WBUIfflbfAT88+icPL7o/BC9FaSyafKRlwkWfQ==|2^31|1:1",
    "a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:AAAA", "a=crypto:x", "a=fingerprint:sha-256 AB",
    "a=crypto:4 AEAD_AES_256_GCM inline:Nl0Rod/mELYO+plhNtN6uK/ScVuMa8KFDcXmAFtwK7n1mw8wbsssQ+5"
    "ExCk= UNENCRYPTED_SRTCP", "a=group:BUNDLE 0", "a=candidate:1 1 udp 1 192.0.2.9 9 typ host",
])


@st.composite
def assembled(draw: st.DrawFn) -> bytes:
    """Plausible SDP built from real line values in random order and number."""
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1"]
    lines += [draw(LINES) for _ in range(draw(st.integers(0, 25)))]
    return ("\r\n".join(lines) + "\r\n").encode()


@FUZZ
@given(assembled())
def test_assembled_sdp(body: bytes) -> None:
    _exercise(body)


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(body: bytes) -> None:
    _exercise(body)


@FUZZ
@given(mutated())
def test_mutated_real_world_sdp(body: bytes) -> None:
    _exercise(body)


@FUZZ
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=200))
def test_random_crypto_values(value: str) -> None:
    try:
        parse_crypto(value)
    except SdpError as exc:
        assert exc.status == 400
