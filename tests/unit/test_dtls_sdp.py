"""SDP DTLS attributes: fingerprint/setup/tls-id parsing, role negotiation, re-association."""

from __future__ import annotations

import pytest

from gateway.sdp import SdpError, parse_sdp
from gateway.sdp.dtls import (
    DtlsParams,
    Fingerprint,
    answer_setup,
    check_fingerprints,
    dtls_attributes,
    dtls_params,
    is_dtls_proto,
    needs_new_association,
    new_tls_id,
    parse_fingerprint,
    parse_setup,
    parse_tls_id,
    role_for_setup,
    role_from_answer,
)

SHA256 = ":".join(["AB"] * 32)
SHA1 = ":".join(["0f"] * 20)

# What baresip 1.0 with dtls_srtp sends (hash name upper case, session-level fingerprint).
BARESIP_OFFER = (
    "v=0\r\n"
    "o=- 1234 5678 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    f"a=fingerprint:SHA-256 {SHA256}\r\n"
    "m=audio 10000 UDP/TLS/RTP/SAVP 0 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=setup:actpass\r\n"
    "a=sendrecv\r\n"
)


def test_baresip_offer_is_understood() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    params = dtls_params(sdp, sdp.media[0])
    assert params.fingerprints == (Fingerprint("sha-256", SHA256),)
    assert params.setup == "actpass" and params.tls_id is None and not params.feedback
    check_fingerprints(params, accept_sha1=False)
    assert answer_setup(params.setup) == "active"
    assert role_for_setup(answer_setup(params.setup)) == "client"


def test_media_level_wins_and_savpf_is_feedback() -> None:
    text = BARESIP_OFFER.replace("UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF") + \
        f"a=fingerprint:sha-1 {SHA1}\r\na=tls-id:{'A' * 24}\r\n"
    sdp = parse_sdp(text)
    params = dtls_params(sdp, sdp.media[0])
    assert params.fingerprints == (Fingerprint("sha-1", SHA1.upper()),)
    assert params.feedback and params.tls_id == "A" * 24


@pytest.mark.parametrize("value", [
    "sha-256", f"sha-256{SHA256}", f"sha-256 {SHA256[:-3]}", f"sha-1 {SHA256}",
    "sha-256 ZZ:00", f"sha-256 {SHA256}:", "",
])
def test_malformed_fingerprints_are_400(value: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_fingerprint(value)
    assert info.value.status == 400


def test_unknown_hash_parses_but_is_not_acceptable() -> None:
    fp = parse_fingerprint("SHA3-256 0A:0B")
    assert fp == Fingerprint("sha3-256", "0A:0B")
    params = DtlsParams((fp, Fingerprint("md5", ":".join(["00"] * 16))), "actpass", None, False)
    with pytest.raises(SdpError) as info:
        check_fingerprints(params, accept_sha1=True)
    assert info.value.status == 488


def test_sha1_only_offer_follows_config() -> None:
    params = DtlsParams((parse_fingerprint(f"SHA-1 {SHA1}"),), "actpass", None, False)
    check_fingerprints(params, accept_sha1=True)
    with pytest.raises(SdpError) as info:
        check_fingerprints(params, accept_sha1=False)
    assert info.value.status == 488 and "sha-1" in info.value.reason


def test_missing_fingerprint_or_wrong_proto_is_488() -> None:
    sdp = parse_sdp(BARESIP_OFFER.replace(f"a=fingerprint:SHA-256 {SHA256}\r\n", ""))
    with pytest.raises(SdpError) as info:
        dtls_params(sdp, sdp.media[0])
    assert info.value.status == 488
    sdp = parse_sdp(BARESIP_OFFER.replace("UDP/TLS/RTP/SAVP", "RTP/AVP"))
    assert not is_dtls_proto(sdp.media[0].proto)
    with pytest.raises(SdpError):
        dtls_params(sdp, sdp.media[0])


@pytest.mark.parametrize(("offered", "answered", "role"), [
    ("actpass", "active", "client"),
    ("active", "passive", "server"),
    ("passive", "active", "client"),
    (None, "passive", "server"),
])
def test_answer_setup_rfc5763(offered: str | None, answered: str, role: str) -> None:
    assert answer_setup(offered) == answered  # type: ignore[arg-type]
    assert role_for_setup(answer_setup(offered)) == role  # type: ignore[arg-type]


def test_holdconn_and_bad_setup_values() -> None:
    with pytest.raises(SdpError) as info:
        answer_setup("holdconn")
    assert info.value.status == 488
    with pytest.raises(SdpError) as info:
        parse_setup("sideways")
    assert info.value.status == 400
    assert parse_setup("ACTPASS") == "actpass"


@pytest.mark.parametrize(("answered", "role"), [("active", "server"), ("passive", "client"),
                                                (None, "server")])
def test_role_after_our_actpass_offer(answered: str | None, role: str) -> None:
    assert role_from_answer(answered) == role  # type: ignore[arg-type]


def test_actpass_is_not_an_answer() -> None:
    with pytest.raises(SdpError) as info:
        role_from_answer("actpass")
    assert info.value.status == 488


def test_tls_id_generation_and_parsing() -> None:
    ids = {new_tls_id() for _ in range(50)}
    assert len(ids) == 50
    for value in ids:
        assert parse_tls_id(value) == value
    for bad_value in ("short", "x" * 256, "has space in it at all!!"):
        with pytest.raises(SdpError):
            parse_tls_id(bad_value)


def _params(fp: str = SHA256, setup: str | None = "actpass", tls_id: str | None = "T" * 20
            ) -> DtlsParams:
    return DtlsParams((Fingerprint("sha-256", fp),), setup, tls_id, False)  # type: ignore[arg-type]


def test_new_association_only_on_real_changes() -> None:
    first = _params()
    assert needs_new_association(None, first)
    assert not needs_new_association(first, _params())  # hold/resume: same attributes
    assert needs_new_association(first, _params(tls_id="U" * 20))
    assert needs_new_association(first, _params(fp=":".join(["CD"] * 32)))
    # A peer that answered active re-offers actpass: same association.
    assert not needs_new_association(_params(setup="active"), _params(setup="actpass"))
    assert needs_new_association(_params(setup="active"), _params(setup="passive"))
    # Legacy peers without tls-id: only the fingerprint tells.
    assert not needs_new_association(_params(tls_id=None), _params(tls_id=None))


def test_our_attributes_make_a_parseable_dtls_stream() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    sdp.remove("fingerprint", "setup")
    media = sdp.media[0]
    media.remove("setup")
    tls_id = new_tls_id()
    media.attributes.extend(dtls_attributes(("SHA-256", SHA256.lower()), "actpass", tls_id))
    again = parse_sdp(sdp.to_text())
    params = dtls_params(again, again.media[0])
    assert params == DtlsParams((Fingerprint("sha-256", SHA256),), "actpass", tls_id, False)


def test_dtls_attributes_for_offer_answer_streams() -> None:
    attrs = dtls_attributes(("SHA-256", SHA256.lower()), "active", "X" * 24)
    assert [str(a) for a in attrs] == [f"fingerprint:sha-256 {SHA256}", "setup:active",
                                       f"tls-id:{'X' * 24}"]


def test_rtp_savp_with_fingerprint_is_read_as_dtls() -> None:
    sdp = parse_sdp(BARESIP_OFFER.replace("UDP/TLS/RTP/SAVP", "RTP/SAVPF"))
    params = dtls_params(sdp, sdp.media[0])
    assert params.feedback and params.fingerprints[0].algorithm == "sha-256"
    bare = parse_sdp(BARESIP_OFFER.replace("UDP/TLS/RTP/SAVP", "RTP/SAVP")
                     .replace(f"a=fingerprint:SHA-256 {SHA256}\r\n", ""))
    with pytest.raises(SdpError) as info:
        dtls_params(bare, bare.media[0])
    assert info.value.status == 488


@pytest.mark.parametrize(("offered", "answered"), [("actpass", "passive"), ("active", "passive"),
                                                   ("passive", "active"), (None, "passive")])
def test_answer_setup_prefers_passive_only_where_the_offer_lets_us(offered: str | None,
                                                                   answered: str) -> None:
    assert answer_setup(offered, prefer_passive=True) == answered  # type: ignore[arg-type]
