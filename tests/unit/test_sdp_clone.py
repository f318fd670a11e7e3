"""SessionDescription.clone: as independent as copy.deepcopy, without its cost."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest

from gateway.media.api import SrtpParams, generate_params
from gateway.sdp import parse_sdp
from gateway.sdp.model import Attribute, Connection, Media, Origin, SessionDescription
from gateway.sdp.offer_answer import (
    LegPolicy,
    OurStream,
    build_answer,
    build_offer,
    new_origin,
    offer_keys,
    read_offer,
)
from tests.support import sdp_samples


def _objects(sdp: SessionDescription) -> Iterator[object]:
    """Every mutable object reachable from a description."""
    yield from (sdp, sdp.origin, sdp.lines, sdp.attributes, sdp.media, *sdp.attributes)
    if sdp.connection is not None:
        yield sdp.connection
    for m in sdp.media:
        yield from (m, m.formats, m.lines, m.attributes, *m.attributes)
        if m.connection is not None:
            yield m.connection


@pytest.mark.parametrize("name", sorted(sdp_samples.ALL))
def test_clone_equals_the_original_and_shares_no_mutable_object(name: str) -> None:
    original = parse_sdp(sdp_samples.ALL[name])
    clone = original.clone()
    assert clone == original == copy.deepcopy(original)
    assert clone.to_bytes() == sdp_samples.ALL[name]
    assert not {id(o) for o in _objects(original)} & {id(o) for o in _objects(clone)}


def _mutations() -> dict[str, Callable[[SessionDescription], None]]:
    def media(sdp: SessionDescription) -> Media:
        return sdp.media[0]

    return {
        "origin field": lambda s: setattr(s.origin, "address", "198.51.100.1"),
        "origin version": lambda s: setattr(s.origin, "sess_version", 99),
        "session name": lambda s: setattr(s, "name", "x"),
        "session connection field": lambda s: setattr(s.connection, "address", "198.51.100.1"),
        "session connection replaced": lambda s: setattr(s, "connection", None),
        "session line appended": lambda s: s.lines.append(("b", "AS:64")),
        "session attribute value": lambda s: setattr(s.attributes[0], "value", "changed"),
        "session attribute added": lambda s: s.add("tool", "x"),
        "session direction": lambda s: s.set_direction("inactive"),
        "media list": lambda s: s.media.clear(),
        "media port": lambda s: setattr(media(s), "port", 1),
        "media proto": lambda s: setattr(media(s), "proto", "RTP/SAVP"),
        "media formats": lambda s: media(s).formats.append("99"),
        "media line": lambda s: media(s).lines.append(("b", "AS:1")),
        "media attribute value": lambda s: setattr(media(s).attributes[0], "value", "changed"),
        "media attribute name": lambda s: setattr(media(s).attributes[0], "name", "changed"),
        "media attributes removed": lambda s: media(s).remove("rtpmap"),
        "media direction": lambda s: media(s).set_direction("recvonly"),
        "media connection set": lambda s: setattr(media(s), "connection",
                                                  Connection.for_address("::1")),
    }


SESSION_LEVEL = sdp_samples.ASTERISK_RTP.replace(b"t=0 0\r\n", b"t=0 0\r\na=tool:t\r\n")


@pytest.mark.parametrize("what", sorted(_mutations()))
@pytest.mark.parametrize("mutate_clone", [True, False], ids=["clone", "original"])
def test_mutating_one_side_never_changes_the_other(what: str, mutate_clone: bool) -> None:
    a = parse_sdp(SESSION_LEVEL)
    b = a.clone()
    changed, other = (b, a) if mutate_clone else (a, b)
    _mutations()[what](changed)
    assert changed.to_bytes() != SESSION_LEVEL or changed != parse_sdp(SESSION_LEVEL)
    assert other.to_bytes() == SESSION_LEVEL and other == parse_sdp(SESSION_LEVEL)


def test_part_clones_are_equal_and_independent() -> None:
    o = Origin("-", "1", 2, "192.0.2.1")
    c = Connection("233.252.0.1", "IN", "IP4", "/127")
    a = Attribute("rtpmap", "0 PCMU/8000")
    for part in (o, c, a):
        twin = part.clone()
        assert twin == part and twin is not part
    a.clone().value = "8 PCMA/8000"
    assert a.value == "0 PCMU/8000"


def _stream(port: int, keys: tuple[SrtpParams, ...]) -> OurStream:
    return OurStream(("127.0.0.1", port), ("127.0.0.1", port + 1), keys=keys,
                     attributes=(Attribute("label", "x"),))


@pytest.mark.parametrize("name", sorted(sdp_samples.ALL))
def test_offer_and_answer_never_share_state_with_their_inputs(name: str) -> None:
    """build_offer/build_answer copy what they keep, so neither the input SDP, the origin nor an
    OurStream attribute changes when the built description is changed afterwards."""
    srtp, rtp = LegPolicy("srtp"), LegPolicy("rtp")
    body = sdp_samples.ALL[name]
    offer = read_offer(body, LegPolicy("dtls-srtp") if b"UDP/TLS" in body
                       else srtp if b"RTP/SAVP" in body else rtp)
    keyed = [_stream(30000 + 2 * i, offer_keys(srtp)) for i in range(len(offer.streams))]
    answering = [_stream(32000 + 2 * i, (generate_params(r.suite),) if r.crypto_tag else ())
                 for i, r in enumerate(offer.streams)]
    origin = new_origin("127.0.0.1")
    built = [build_offer(offer.sdp, keyed, srtp, origin),
             build_answer(offer, None, answering, rtp, origin),
             build_answer(offer, offer.sdp, answering, rtp, origin)]
    inputs = {id(o) for o in _objects(offer.sdp)} | {id(origin)}
    inputs |= {id(a) for s in keyed + answering for a in s.attributes}
    for sdp in built:
        assert not inputs & {id(o) for o in _objects(sdp)}
    assert offer.sdp.to_bytes() == body
