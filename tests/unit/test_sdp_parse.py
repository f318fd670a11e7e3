"""SDP model: faithful round trips of real-world bodies, structured reads, typed errors."""

from __future__ import annotations

import pytest

from gateway.sdp import SdpError, parse_sdp
from gateway.sdp.model import MAX_BYTES, MAX_LINE_LENGTH, MAX_LINES, MAX_MEDIA
from tests.support import sdp_samples

HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


@pytest.mark.parametrize("name", sorted(sdp_samples.ALL))
def test_samples_round_trip_byte_exact(name: str) -> None:
    body = sdp_samples.ALL[name]
    assert parse_sdp(body).to_bytes() == body


def test_lf_only_line_endings_are_accepted_and_written_as_crlf() -> None:
    body = sdp_samples.ASTERISK_RTP.replace(b"\r\n", b"\n")
    assert parse_sdp(body).to_bytes() == sdp_samples.ASTERISK_RTP


def test_trailing_blanks_are_tolerated() -> None:
    body = sdp_samples.ASTERISK_RTP.replace(b"\r\n", b" \t\r\n")
    assert parse_sdp(body).to_bytes() == sdp_samples.ASTERISK_RTP


def test_structured_reads_of_a_baresip_offer() -> None:
    sdp = parse_sdp(sdp_samples.BARESIP_SRTP)
    assert (sdp.origin.sess_id, sdp.origin.sess_version, sdp.origin.address) == (
        "1863427841", 2981235812, "192.168.10.21")
    assert sdp.connection is not None and sdp.connection.address == "192.168.10.21"
    (audio,) = sdp.media
    assert (audio.kind, audio.port, audio.proto, audio.formats) == (
        "audio", 10336, "RTP/SAVP", ["0", "8", "101"])
    assert audio.rtpmap["101"] == ("telephone-event", 8000, None)
    assert audio.fmtp == {"101": "0-15"}
    assert audio.ptime == 20.0
    assert audio.rtcp_mux and audio.rtcp is None
    assert len(audio.get_all("crypto")) == 2
    assert audio.lines == [("b", "AS:64")]
    assert sdp.direction_for(audio) == "sendrecv"


def test_media_level_connection_and_several_streams() -> None:
    sdp = parse_sdp(sdp_samples.CISCO_SRTP_VIDEO)
    assert sdp.connection is None
    audio, video = sdp.media
    assert sdp.connection_for(audio).address == "172.16.5.11"
    assert video.kind == "video" and video.rtpmap["126"] == ("H264", 90000, None)
    assert video.fmtp["126"] == "profile-level-id=42801E;packetization-mode=1"


def test_rtcp_attribute_with_address_and_unknown_lines_kept() -> None:
    sdp = parse_sdp(sdp_samples.HOLD_SENDONLY)
    (audio,) = sdp.media
    assert audio.rtcp == (53020, "198.51.100.2")
    assert sdp.direction_for(audio) == "sendonly"
    assert ("e", "alice@example.com") in sdp.lines
    assert sdp.get("x-vendor-session") == "42"
    assert audio.get("x-custom") == "keep me"


def test_set_direction_keeps_attribute_order() -> None:
    sdp = parse_sdp(HEAD + "m=audio 5 RTP/AVP 0\r\na=x\r\na=sendonly\r\na=y\r\na=inactive\r\n")
    (audio,) = sdp.media
    assert audio.direction == "inactive"
    audio.set_direction("recvonly")
    assert [str(a) for a in audio.attributes] == ["x", "recvonly", "y"]
    audio.set_direction(None)
    assert [str(a) for a in audio.attributes] == ["x", "y"] and audio.direction is None
    audio.set_direction("sendonly")
    assert [str(a) for a in audio.attributes] == ["x", "y", "sendonly"]


def test_old_style_hold_reads_as_sendonly() -> None:
    sdp = parse_sdp(sdp_samples.OLD_HOLD)
    assert sdp.connection is not None and sdp.connection.is_hold
    assert sdp.direction_for(sdp.media[0]) == "sendonly"


def test_rejected_stream_and_t38() -> None:
    sdp = parse_sdp(sdp_samples.T38_REINVITE)
    audio, image = sdp.media
    assert audio.rejected and not image.rejected
    assert image.proto == "udptl" and image.formats == ["t38"] and not image.is_rtp
    assert image.get("T38MaxBitRate") == "14400"


def test_ipv6_connection_and_port_count() -> None:
    body = ("v=0\r\no=- 1 1 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n"
            "m=audio 5000/2 RTP/AVP 0\r\n")
    sdp = parse_sdp(body)
    assert sdp.media[0].port_count == 2
    assert sdp.to_text() == body


def test_session_lines_are_written_in_rfc4566_order() -> None:
    body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\ni=info\r\nc=IN IP4 192.0.2.1\r\n"
    assert parse_sdp(body).to_text().splitlines()[3:5] == ["i=info", "c=IN IP4 192.0.2.1"]


def test_reprs_never_show_keys() -> None:
    sdp = parse_sdp(sdp_samples.BARESIP_SRTP)
    text = repr(sdp) + repr(sdp.media[0]) + repr(sdp.media[0].attributes)
    assert "uCRNAomB1pOve0Vq" not in text
    assert "inline:<redacted>" in text


BAD = {
    "empty": b"",
    "no version": b"o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n",
    "version 1": b"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n",
    "no origin": b"v=0\r\ns=-\r\nt=0 0\r\n",
    "bad origin": b"v=0\r\no=- x 1 IN IP4 192.0.2.1\r\ns=-\r\n",
    "repeated origin": (HEAD + "o=- 1 1 IN IP4 192.0.2.1\r\n").encode(),
    "not a line": (HEAD + "hello\r\n").encode(),
    "upper-case type": (HEAD + "A=foo\r\n").encode(),
    "bad m line": (HEAD + "m=audio x RTP/AVP 0\r\n").encode(),
    "m without formats": (HEAD + "m=audio 5000 RTP/AVP\r\n").encode(),
    "port too big": (HEAD + "m=audio 70000 RTP/AVP 0\r\n").encode(),
    "bad connection": (HEAD.replace("c=IN IP4 192.0.2.1", "c=IN IP4")).encode(),
    "not an ip": (HEAD.replace("192.0.2.1\r\nt", "example.com\r\nt")).encode(),
    "family mismatch": (HEAD.replace("c=IN IP4 192.0.2.1", "c=IN IP6 192.0.2.1")).encode(),
    "no connection": b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\n",
    "bad rtcp": (HEAD + "m=audio 5000 RTP/AVP 0\r\na=rtcp:99999\r\n").encode(),
    "bad ptime": (HEAD + "m=audio 5000 RTP/AVP 0\r\na=ptime:twenty\r\n").encode(),
    "o in media": (HEAD + "m=audio 5000 RTP/AVP 0\r\no=- 1 1 IN IP4 192.0.2.1\r\n").encode(),
    "two media c": (HEAD + "m=audio 5 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\n"
                    ).encode(),
    "nul byte": (HEAD + "a=x\x00y\r\n").encode(),
    "too many m": (HEAD + "m=audio 5000 RTP/AVP 0\r\n" * (MAX_MEDIA + 1)).encode(),
    "too long line": (HEAD + "a=x:" + "y" * MAX_LINE_LENGTH + "\r\n").encode(),
    "too many lines": (HEAD + "a=x\r\n" * MAX_LINES).encode(),
    "too big": (HEAD + ("a=" + "x" * 1000 + "\r\n") * (MAX_BYTES // 1000 + 1)).encode(),
    "wide text": HEAD + "a=\u20ac\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_sdp_gives_400(name: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(BAD[name])
    assert info.value.status == 400


@pytest.mark.parametrize(("conn", "ok"), [
    ("IN IP4 192.0.2.1", True), ("IN IP6 2001:db8::1", True), ("IN IP6 192.0.2.1", False),
    ("IN IP4 2001:db8::1", False), ("IN IP4 gw.example", False), ("IN IP4 192.0.2.256", False),
])
def test_connection_address_checks_hold_on_every_parse(conn: str, ok: bool) -> None:
    """The IP check is cached; a second parse of the same address must judge it the same."""
    body = HEAD.replace("c=IN IP4 192.0.2.1", f"c={conn}")
    for _ in range(2):
        if ok:
            assert parse_sdp(body).connection.address == conn.split()[2]
        else:
            with pytest.raises(SdpError) as info:
                parse_sdp(body)
            assert info.value.status == 400
