"""Offer/answer per leg (RFC 3264) under each trunk media policy, with real-phone style SDP."""

from __future__ import annotations

import base64

import pytest

from gateway.media.api import SrtpParams, generate_params
from gateway.sdp import Attribute, SdpError, parse_crypto, parse_sdp
from gateway.sdp.offer_answer import (
    LegPolicy,
    OurStream,
    build_answer,
    build_offer,
    new_origin,
    next_origin,
    offer_keys,
    read_answer,
    read_offer,
)
from tests.support import sdp_samples as S

GW = "127.0.0.1"
RTP = LegPolicy("rtp")
SRTP = LegPolicy("srtp")
OPTIONAL = LegPolicy("srtp-optional")
DTLS = LegPolicy("dtls-srtp")


def ours(port: int, policy: LegPolicy, rtcp: int | None = None, **kw) -> OurStream:
    return OurStream((GW, port), (GW, rtcp if rtcp is not None else port + 1),
                     keys=kw.pop("keys", offer_keys(policy)), **kw)


def peer_answer(offer_text: str, tag: int | None = None, address: str = "203.0.113.9",
                port: int = 7000) -> str:
    """What a simple SDES peer answers: our offer with its own address, port and one key."""
    sdp = parse_sdp(offer_text)
    sdp.origin.address = address
    sdp.connection.address = address
    for m in sdp.media:
        if m.port:
            m.port = port
        if tag is not None:
            chosen = next(c for c in map(parse_crypto, m.get_all("crypto")) if c.tag == tag)
            m.remove("crypto")
            key = generate_params(chosen.suite).key
            m.add("crypto", f"{tag} {chosen.suite} inline:{base64.b64encode(key).decode()}")
    return sdp.to_text()


def cryptos(text: str, index: int = 0) -> list:
    return [parse_crypto(v) for v in parse_sdp(text).media[index].get_all("crypto")]


# --------------------------------------------------------------------------- plain -> SDES


def test_plain_pbx_offer_becomes_srtp_offer_with_our_suites_and_hidden_topology() -> None:
    a = read_offer(S.ASTERISK_RTP, RTP)
    (stream,) = a.streams
    assert stream.accepted and stream.rtp == ("10.20.0.5", 17458) and stream.remote_key is None
    assert stream.rtcp == ("10.20.0.5", 17459) and not stream.rtcp_mux
    keys = offer_keys(SRTP)
    origin = new_origin(GW)
    b = build_offer(a.sdp, [ours(30000, SRTP, keys=keys)], SRTP, origin).to_text()
    assert "10.20.0.5" not in b and "Asterisk" not in b
    assert "\r\no=- " in b and f"IN IP4 {GW}\r\n" in b and "\r\ns=-\r\n" in b
    assert "m=audio 30000 RTP/SAVP 9 0 8 101\r\n" in b
    for kept in ("a=rtpmap:9 G722/8000", "a=fmtp:101 0-16", "a=ptime:20", "a=maxptime:150",
                 "a=sendrecv", "a=rtcp-mux"):
        assert kept in b
    assert "a=rtcp:" not in b  # RTCP on port + 1 needs no RFC 3605 attribute
    offered = cryptos(b)
    assert [(c.tag, c.suite) for c in offered] == [
        (1, "AEAD_AES_256_GCM"), (2, "AEAD_AES_128_GCM"), (3, "AES_CM_128_HMAC_SHA1_80")]
    assert [c.material for c in offered] == [k.key for k in keys]


def test_answer_from_sdes_peer_yields_both_keys_and_plain_answer_back() -> None:
    a = read_offer(S.ASTERISK_RTP, RTP)
    offer_b = build_offer(a.sdp, [ours(30000, SRTP)], SRTP, new_origin(GW))
    answer_text = peer_answer(offer_b.to_text(), tag=3)
    b = read_answer(offer_b, answer_text, SRTP)
    (stream,) = b.streams
    assert b.accepted == (stream,) and stream.srtp and not a.streams[0].srtp
    assert stream.accepted and stream.rtp == ("203.0.113.9", 7000) and stream.rtcp_mux
    assert stream.crypto_tag == 3 and stream.suite == "AES_CM_128_HMAC_SHA1_80"
    assert stream.remote_key.key == cryptos(answer_text)[0].material
    assert stream.local_key.key == cryptos(offer_b.to_text())[2].material
    answer_a = build_answer(a, b.sdp, [ours(30002, RTP, keys=())], RTP, new_origin(GW)).to_text()
    assert "m=audio 30002 RTP/AVP 9 0 8 101\r\n" in answer_a
    assert "crypto" not in answer_a and "203.0.113.9" not in answer_a
    assert "rtcp-mux" not in answer_a  # A did not offer it


# --------------------------------------------------------------------------- SDES offers


def test_suite_chosen_in_our_order_and_their_tag_kept() -> None:
    policy = LegPolicy("srtp", suites=("AES_CM_128_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80"))
    a = read_offer(S.BARESIP_SRTP, policy)
    (stream,) = a.streams
    assert (stream.crypto_tag, stream.suite) == (2, "AES_CM_128_HMAC_SHA1_32")
    assert stream.remote_key.key == base64.b64decode("e1S2aDbB+90T0kQdnhQ03GLKZ3+2j1/makZLqt7N")
    assert stream.rtcp_mux and stream.rtcp == stream.rtp
    key = generate_params(stream.suite)
    answer = build_answer(a, None, [OurStream((GW, 30010), (GW, 30010), keys=(key,))], policy,
                          new_origin(GW)).to_text()
    (mine,) = cryptos(answer)
    assert (mine.tag, mine.suite, mine.material) == (2, "AES_CM_128_HMAC_SHA1_32", key.key)
    assert "m=audio 30010 RTP/SAVP 0 8 101" in answer and "a=rtcp-mux" in answer
    assert "uCRNAomB1pOve0Vq" not in answer and "e1S2aDbB" not in answer


@pytest.mark.parametrize(("suites", "tag"), [
    (("AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80"), 1),
    (("AEAD_AES_128_GCM",), 2),
    (("AES_256_CM_HMAC_SHA1_80", "AEAD_AES_128_GCM"), 3),
    (("AES_CM_128_HMAC_SHA1_80",), 4),
])
def test_gcm_and_aes256_offers(suites: tuple[str, ...], tag: int) -> None:
    (stream,) = read_offer(S.TRUNK_GCM, LegPolicy("srtp", suites=suites)).streams
    assert stream.crypto_tag == tag and stream.suite == suites[0]


def test_mki_lines_are_declined_and_a_plain_line_chosen() -> None:
    (stream,) = read_offer(S.POLYCOM_SRTP_MKI, SRTP).streams
    assert stream.crypto_tag == 3
    only_mki = S.POLYCOM_SRTP_MKI.replace(b"a=crypto:3 ", b"a=x-crypto:3 ")
    with pytest.raises(SdpError) as info:
        read_offer(only_mki, SRTP)
    assert info.value.status == 488


@pytest.mark.parametrize(("params", "policy", "accepted"), [
    ("UNENCRYPTED_SRTCP", SRTP, False),
    ("UNENCRYPTED_SRTCP", LegPolicy("srtp", accept_unencrypted_srtcp=True), True),
    ("UNENCRYPTED_SRTP", LegPolicy("srtp", accept_unencrypted_srtcp=True), False),
    ("UNAUTHENTICATED_SRTP", SRTP, False),
    ("KDR=1", SRTP, False),
    ("KDR=0", SRTP, True),
    ("WSH=64", SRTP, True),
    ("WSH=x", SRTP, False),
    ("FEC_ORDER=FEC_SRTP", SRTP, False),
    ("X_UNKNOWN", SRTP, False),
])
def test_session_parameters(params: str, policy: LegPolicy, accepted: bool) -> None:
    body = S.ASTERISK_SRTP.replace(b"a=crypto:2", b"a=x-crypto:2").replace(
        b"ZUoHd\r\n", b"ZUoHd " + params.encode() + b"\r\n")
    assert params.encode() in body
    if not accepted:
        with pytest.raises(SdpError):
            read_offer(body, policy)
        return
    (stream,) = read_offer(body, policy).streams
    assert stream.remote_key.unencrypted_srtcp == (params == "UNENCRYPTED_SRTCP")


def test_malformed_crypto_line_is_declined_not_fatal() -> None:
    policy = LegPolicy("srtp", suites=("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"))
    assert read_offer(S.ASTERISK_SRTP, policy).streams[0].crypto_tag == 1
    body = S.ASTERISK_SRTP.replace(b"inline:+rhIyb", b"inline:+rh")
    (stream,) = read_offer(body, policy).streams
    assert stream.crypto_tag == 2


def test_policy_mismatches_are_488() -> None:
    for body, policy in [(S.ASTERISK_RTP, SRTP), (S.BARESIP_SRTP, RTP), (S.DTLS_OFFER, SRTP),
                         (S.BARESIP_SRTP, DTLS), (S.BARESIP_SRTP, LegPolicy("srtp", suites=()))]:
        with pytest.raises(SdpError) as info:
            read_offer(body, policy)
        assert info.value.status == 488


def test_rtcp_mux_can_be_refused_by_policy() -> None:
    policy = LegPolicy("srtp", rtcp_mux=False)
    a = read_offer(S.BARESIP_SRTP, policy)
    (stream,) = a.streams
    assert not stream.rtcp_mux and stream.rtcp == ("192.168.10.21", 10337)
    offer = build_offer(a.sdp, [ours(30000, policy, rtcp=30007)], policy, new_origin(GW))
    text = offer.to_text()
    assert "a=rtcp-mux" not in text and "a=rtcp:30007\r\n" in text


# --------------------------------------------------------------------------- answers


def test_answer_errors_are_488() -> None:
    a = read_offer(S.ASTERISK_RTP, RTP)
    offer = build_offer(a.sdp, [ours(30000, SRTP)], SRTP, new_origin(GW))
    text = offer.to_text()
    plain = peer_answer(text)
    cases = {
        "no crypto": plain.replace("a=crypto", "a=x-crypto"),
        "two cryptos": plain,
        "unknown tag": peer_answer(text, tag=2).replace("a=crypto:2 ", "a=crypto:9 "),
        "suite swapped": peer_answer(text, tag=3).replace("a=crypto:3 ", "a=crypto:1 "),
        "changed proto": peer_answer(text, tag=3).replace("RTP/SAVP", "RTP/AVP"),
        "extra m line": peer_answer(text, tag=3) + "m=video 7002 RTP/SAVP 96\r\n",
    }
    for name, answer in cases.items():
        with pytest.raises(SdpError) as info:
            read_answer(offer, answer, SRTP)
        assert info.value.status == 488, name


def test_srtp_optional_falls_back_to_rtp_or_uses_keys() -> None:
    a = read_offer(S.ASTERISK_RTP, RTP)
    offer = build_offer(a.sdp, [ours(30000, OPTIONAL)], OPTIONAL, new_origin(GW))
    text = offer.to_text()
    assert "RTP/AVP 9 0 8 101" in text and len(cryptos(text)) == 3
    plain = read_answer(offer, peer_answer(text).replace("a=crypto", "a=x-crypto"), OPTIONAL)
    assert plain.streams[0].accepted and plain.streams[0].remote_key is None
    keyed = read_answer(offer, peer_answer(text, tag=1), OPTIONAL)
    assert keyed.streams[0].suite == "AEAD_AES_256_GCM"
    # as answerer: RTP/AVP with crypto means SRTP, without it means RTP
    assert read_offer(plain.sdp, OPTIONAL).streams[0].remote_key is None
    assert read_offer(keyed.sdp, OPTIONAL).streams[0].crypto_tag == 1


def test_answer_template_formats_are_limited_to_the_offer() -> None:
    a = read_offer(S.ASTERISK_RTP, RTP)
    template = parse_sdp(S.ASTERISK_RTP.replace(b"RTP/AVP 9 0 8 101", b"RTP/AVP 18 0"))
    text = build_answer(a, template, [ours(30000, RTP, keys=())], RTP, new_origin(GW)).to_text()
    assert "m=audio 30000 RTP/AVP 0\r\n" in text
    template = parse_sdp(S.ASTERISK_RTP.replace(b"RTP/AVP 9 0 8 101", b"RTP/AVP 18"))
    text = build_answer(a, template, [ours(30000, RTP, keys=())], RTP, new_origin(GW)).to_text()
    assert "m=audio 0 RTP/AVP" in text


def test_answer_needs_the_key_of_the_chosen_suite() -> None:
    a = read_offer(S.BARESIP_SRTP, SRTP)
    wrong = OurStream((GW, 30000), (GW, 30000), keys=(generate_params("AEAD_AES_128_GCM"),))
    with pytest.raises(ValueError):
        build_answer(a, None, [wrong], SRTP, new_origin(GW))


# --------------------------------------------------------------------------- streams, hold


def test_t38_reinvite_keeps_port_zero_and_relays_udptl_on_plain_legs() -> None:
    a = read_offer(S.T38_REINVITE, RTP)
    audio, image = a.streams
    assert a.accepted == (image,)
    assert not audio.accepted and image.accepted and image.rtp == ("10.20.0.5", 17470)
    offer = build_offer(a.sdp, [None, ours(30004, RTP)], RTP, new_origin(GW)).to_text()
    assert "m=audio 0 RTP/AVP 0\r\n" in offer and "m=image 30004 udptl t38\r\n" in offer
    assert "a=T38FaxRateManagement:transferredTCF" in offer and "a=rtcp-mux" not in offer
    secure = build_offer(a.sdp, [None, ours(30004, SRTP)], SRTP, new_origin(GW)).to_text()
    assert "m=image 0 udptl t38\r\n" in secure
    with pytest.raises(SdpError):
        read_offer(S.T38_REINVITE, SRTP)


def test_audio_and_video_get_separate_fresh_keys() -> None:
    a = read_offer(S.CISCO_SRTP_VIDEO, SRTP)
    assert [s.suite for s in a.streams] == ["AES_CM_128_HMAC_SHA1_80"] * 2
    assert [s.crypto_tag for s in a.streams] == [2, 1]
    offer = build_offer(a.sdp, [ours(30000, RTP), ours(30002, RTP)], RTP, new_origin(GW))
    text = offer.to_text()
    assert "172.16.5" not in text and "CiscoSystems" not in text and "SIP Call" not in text
    assert "m=video 30002 RTP/AVP 126" in text and "a=rtcp-fb:* nack pli" in text
    assert "b=TIAS:1000000" in text
    rekeyed = build_offer(a.sdp, [ours(30000, SRTP), ours(30002, SRTP)], SRTP, new_origin(GW))
    audio_keys = {c.material for c in cryptos(rekeyed.to_text(), 0)}
    video_keys = {c.material for c in cryptos(rekeyed.to_text(), 1)}
    assert len(audio_keys) == 3 and not audio_keys & video_keys


def test_hold_direction_passes_and_foreign_lines_go() -> None:
    a = read_offer(S.HOLD_SENDONLY, RTP)
    (stream,) = a.streams
    assert stream.direction == "sendonly" and stream.rtcp == ("198.51.100.2", 53020)
    text = build_offer(a.sdp, [ours(30000, SRTP)], SRTP, new_origin(GW)).to_text()
    assert "a=sendonly" in text and "a=x-custom:keep me" in text
    assert "a=x-vendor-session:42" in text
    for gone in ("198.51.100", "alice", "i=", "u=", "e=", "p="):
        assert gone not in text
    answer = build_answer(a, None, [ours(30002, RTP, keys=())], RTP, new_origin(GW)).to_text()
    assert "a=recvonly" in answer


def test_old_style_hold_becomes_sendonly_with_our_address() -> None:
    a = read_offer(S.OLD_HOLD, RTP)
    (stream,) = a.streams
    assert stream.accepted and stream.rtp is None and stream.direction == "sendonly"
    text = build_offer(a.sdp, [ours(30000, RTP)], RTP, new_origin(GW)).to_text()
    assert "0.0.0.0" not in text and f"c=IN IP4 {GW}" in text and "a=sendonly" in text


def test_dtls_offer_is_read_on_dtls_leg_and_stripped_toward_sdes() -> None:
    a = read_offer(S.DTLS_OFFER, DTLS)
    (stream,) = a.streams
    assert stream.accepted and stream.dtls and stream.rtcp_mux and stream.remote_key is None
    text = build_offer(a.sdp, [ours(30000, SRTP)], SRTP, new_origin(GW)).to_text()
    assert "m=audio 30000 RTP/SAVPF 111 0" in text and "a=mid:0" in text
    for gone in ("fingerprint", "setup", "ice-", "candidate", "BUNDLE", "192.0.2.10"):
        assert gone not in text
    extra = (Attribute("setup", "actpass"), Attribute("fingerprint", "sha-256 AB:CD"))
    back = build_offer(a.sdp, [ours(30000, DTLS, attributes=extra)], DTLS, new_origin(GW))
    back_text = back.to_text()
    assert "UDP/TLS/RTP/SAVPF 111 0" in back_text and "a=fingerprint:sha-256 AB:CD" in back_text
    assert "crypto" not in back_text
    reading = read_answer(back, back_text.replace("actpass", "active"), DTLS)
    assert reading.streams[0].dtls


def test_reoffer_bumps_version_and_keeps_session_id() -> None:
    first = new_origin(GW)
    second = next_origin(first)
    assert second.sess_id == first.sess_id and second.sess_version == first.sess_version + 1
    a = read_offer(S.ASTERISK_RTP, RTP)
    offer = build_offer(a.sdp, [ours(30000, RTP)], RTP, second)
    assert offer.origin.sess_version == 2 and offer.origin.address == GW
    again = build_offer(offer, [ours(30000, RTP)], RTP, next_origin(second))
    assert again.to_text().count("a=rtcp-mux") == 1 and again.origin.sess_version == 3


def test_null_suites_are_never_offered_and_keys_never_in_reprs() -> None:
    policy = LegPolicy("srtp", suites=("NULL_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"))
    keys = offer_keys(policy)
    assert [k.suite for k in keys] == ["AES_CM_128_HMAC_SHA1_80"]
    a = read_offer(S.BARESIP_SRTP, SRTP)
    text = repr(a) + repr(a.streams) + repr(keys)
    assert "uCRNAomB1pOve0Vq" not in text and "inline" not in text
    assert keys[0].key.hex() not in text


def test_offer_requires_keys_on_sdes_legs_and_one_stream_per_mline() -> None:
    a = read_offer(S.ASTERISK_RTP, RTP)
    with pytest.raises(ValueError):
        build_offer(a.sdp, [ours(30000, SRTP, keys=())], SRTP, new_origin(GW))
    with pytest.raises(ValueError):
        build_offer(a.sdp, [], SRTP, new_origin(GW))


def test_remote_key_is_usable_by_the_media_layer() -> None:
    (stream,) = read_offer(S.TRUNK_GCM, SRTP).streams
    assert isinstance(stream.remote_key, SrtpParams)
    assert stream.remote_key == SrtpParams("AEAD_AES_256_GCM", base64.b64decode(
        "Nl0Rod/mELYO+plhNtN6uK/ScVuMa8KFDcXmAFtwK7n1mw8wbsssQ+5ExCk="))


def test_rtcp_attribute_address_reaches_media_only_as_an_ip() -> None:
    """RFC 3605 allows any connection-address in a=rtcp, but the relay takes IP literals only
    (as for c=): a host name must not reach it; RTCP then goes to the RTP address."""
    offer = ("v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
             "m=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 pbx.example.com\r\n"
             "m=audio 5000 RTP/AVP 0\r\na=rtcp:6001 IN IP4 192.0.2.6\r\n")
    streams = read_offer(offer, RTP).streams
    assert streams[0].rtcp == ("192.0.2.5", 4001)
    assert streams[1].rtcp == ("192.0.2.6", 6001)


def test_multicast_connection_address_is_declined() -> None:
    """The relay is unicast: an SDP naming a multicast group (c=IN IP4 224.0.0.1/127) must not
    make the gateway send a leg's media onto that group; the stream is declined (port 0)."""
    offer = ("v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
             "m=audio 4000 RTP/AVP 0\r\n"
             "m=audio 5000 RTP/AVP 0\r\nc=IN IP4 224.0.0.1/127\r\n")
    reading = read_offer(offer, RTP)
    assert reading.streams[0].accepted and not reading.streams[1].accepted
    assert reading.streams[1].rtp is None
    with pytest.raises(SdpError) as info:
        read_offer(offer.replace("c=IN IP4 192.0.2.5\r\nt", "c=IN IP6 ff02::1\r\nt"), RTP)
    assert info.value.status == 488
    ours_offer = build_offer(parse_sdp(S.ASTERISK_RTP), [ours(30000, RTP)], RTP, new_origin(GW))
    answer = ours_offer.to_text().replace(f"c=IN IP4 {GW}", "c=IN IP4 239.1.1.1")
    assert not read_answer(ours_offer, answer, RTP).streams[0].accepted
