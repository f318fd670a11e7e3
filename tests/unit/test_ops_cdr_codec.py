"""The codec a CDR names: the first format of the first stream still in use in an answer."""

from __future__ import annotations

from gateway.b2bua.media import first_codec
from gateway.sdp.model import parse_sdp

HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def codec(media: str) -> str | None:
    found = first_codec(parse_sdp(HEAD + media))
    return found[2] if found is not None else None


def test_static_payload_without_rtpmap() -> None:
    assert codec("m=audio 4000 RTP/AVP 0 8\r\n") == "PCMU"
    assert codec("m=audio 4000 RTP/SAVP 8 0\r\n") == "PCMA"


def test_rtpmap_name_wins_and_unknown_dynamic_types_are_numbered() -> None:
    assert codec("m=audio 4000 RTP/AVP 111 0\r\na=rtpmap:111 opus/48000/2\r\n") == "opus"
    assert codec("m=audio 4000 RTP/AVP 96\r\n") == "pt96"


def test_rejected_and_non_rtp_streams_are_skipped() -> None:
    sdp = parse_sdp(HEAD + "m=audio 0 RTP/AVP 0\r\nm=image 4002 udptl t38\r\n"
                    "m=audio 4004 RTP/AVP 9\r\n")
    found = first_codec(sdp)
    assert found is not None and found[0] == 2 and found[2] == "G722"
    assert codec("m=audio 0 RTP/AVP 0\r\n") is None


def test_peer_chosen_names_are_bounded() -> None:
    name = codec("m=audio 4000 RTP/AVP 97\r\na=rtpmap:97 " + "X" * 200 + "/8000\r\n")
    assert name is not None and len(name) == 32
