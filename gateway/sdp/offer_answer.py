"""RFC 3264 offer/answer per leg, as pure functions the B2BUA calls.

A call has two legs. The B2BUA reads the offer that arrives on leg A (``read_offer``), sends its own
offer on leg B (``build_offer``, from A's offer as template), reads B's answer (``read_answer``)
and answers A (``build_answer``, from B's answer as template). Stream ``i`` of every SDP maps to
stream ``i`` of the others, so m-line order and count are preserved end to end.

Each leg has a ``LegPolicy`` from its trunk: ``rtp`` strips every crypto attribute, ``srtp``
requires SDES (RTP/SAVP), ``srtp-optional`` offers SDES on RTP/AVP and falls back to RTP (the
best-effort style of RFC 8643), ``dtls-srtp`` uses UDP/TLS/RTP/SAVP with attributes supplied by
``gateway.sdp.dtls``. Keys are always per leg: the peer's key is read from its SDP, ours comes from
the media layer and is never copied from the other leg.
"""

from __future__ import annotations

import functools
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.config import DEFAULT_SUITES, MediaPolicy, Trunk
from gateway.media.api import SUITE_KEY_LENGTHS, Address, InvalidParams, SrtpParams, generate_params
from gateway.sdp import grammar
from gateway.sdp.crypto import (
    NULL_SUITES,
    UNENCRYPTED_SRTCP,
    CryptoAttribute,
    format_crypto,
    parse_crypto,
)
from gateway.sdp.errors import SdpError, unacceptable
from gateway.sdp.model import (
    DIRECTIONS,
    Attribute,
    Connection,
    Media,
    Origin,
    SessionDescription,
    parse_sdp,
)

# Attributes that belong to the other leg's transport or keys and must never cross the gateway.
FOREIGN_ATTRIBUTES = frozenset({
    "crypto", "fingerprint", "setup", "connection", "tls-id", "key-mgmt", "zrtp-hash",
    "ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "ice-mismatch", "candidate",
    "remote-candidates", "end-of-candidates", "rtcp", "rtcp-mux", "rtcp-mux-only",
    # RFC 5939 capability negotiation: a=acap carries whole a=crypto lines, keys included
    "acap", "tcap", "pcfg", "acfg",
})
# Session-level lines that describe the other side's people or keys (topology hiding).
_FOREIGN_SESSION_LINES = frozenset("iuepk")
_FOREIGN_MEDIA_LINES = frozenset("ik")


@dataclass(frozen=True, slots=True)
class LegPolicy:
    """How one leg negotiates media: its trunk's media policy and suite preference order."""

    media: MediaPolicy
    suites: tuple[str, ...] = DEFAULT_SUITES
    rtcp_mux: bool = True
    accept_unencrypted_srtcp: bool = False

    @classmethod
    def from_trunk(cls, trunk: Trunk) -> LegPolicy:
        return cls(trunk.media, trunk.suites, trunk.rtcp_mux, trunk.accept_unencrypted_srtcp)

    @property
    def sdes(self) -> bool:
        return self.media in ("srtp", "srtp-optional")

    @property
    def offerable_suites(self) -> tuple[str, ...]:
        """Our suites that the media layer can run; NULL suites are never offered."""
        return tuple(s for s in self.suites if s in SUITE_KEY_LENGTHS and s not in NULL_SUITES)


@dataclass(frozen=True, slots=True)
class OurStream:
    """What we put into one m-line on a leg: the relay's addresses, our keys, extra attributes.

    ``keys`` are our SDES keys: in an offer, one per suite in our preference order (see
    ``offer_keys``); in an answer, exactly one, for the suite ``read_offer`` chose. ``attributes``
    carries what other modules add (e.g. DTLS ``setup``/``fingerprint`` from gateway.sdp.dtls).
    ``rtcp == rtp`` means RTCP is multiplexed only.
    """

    rtp: Address
    rtcp: Address | None = None
    keys: tuple[SrtpParams, ...] = ()
    attributes: tuple[Attribute, ...] = ()


@dataclass(frozen=True, slots=True)
class RemoteStream:
    """What a peer's offer or answer says about one stream, checked against the leg's policy.

    ``accepted`` False means the stream is rejected (port 0 on the wire, or nothing in it the
    policy can use): answer it / relay it with port 0. ``rtp`` is None while on hold with
    ``c=0.0.0.0``. ``remote_key`` is the peer's SRTP key (the relay's ``rx``); ``local_key`` is
    ours (``tx``) when it is already known, i.e. after ``read_answer``.
    """

    index: int
    kind: str
    proto: str
    accepted: bool
    rtp: Address | None = None
    rtcp: Address | None = None
    rtcp_mux: bool = False
    direction: str = "sendrecv"
    formats: tuple[str, ...] = ()
    remote_key: SrtpParams | None = field(default=None, repr=False)
    local_key: SrtpParams | None = field(default=None, repr=False)
    crypto_tag: int | None = None
    dtls: bool = False
    reason: str = ""

    @property
    def srtp(self) -> bool:
        return self.remote_key is not None or self.dtls

    @property
    def suite(self) -> str | None:
        return self.remote_key.suite if self.remote_key is not None else None


@dataclass(frozen=True, slots=True)
class Negotiation:
    """A parsed offer or answer and its per-stream reading."""

    sdp: SessionDescription
    streams: tuple[RemoteStream, ...]

    @property
    def accepted(self) -> tuple[RemoteStream, ...]:
        return tuple(s for s in self.streams if s.accepted)


def new_origin(address: str, sess_id: str | None = None) -> Origin:
    """Our own o= line for a leg: random session id, version 1, our address (topology hiding)."""
    sid = sess_id if sess_id is not None else str(secrets.randbelow(2**62) + 1)
    return Origin("-", sid, 1, address, "IN", "IP6" if ":" in address else "IP4")


def next_origin(origin: Origin) -> Origin:
    """The o= line for the next offer or answer on the same leg: same id, version + 1."""
    return Origin(origin.username, origin.sess_id, origin.sess_version + 1, origin.address,
                  origin.nettype, origin.addrtype)


def offer_keys(policy: LegPolicy) -> tuple[SrtpParams, ...]:
    """Fresh keys for an offer on an SDES leg, one per offerable suite in preference order."""
    if not policy.sdes:
        return ()
    return tuple(generate_params(s) for s in policy.offerable_suites)


# --------------------------------------------------------------------------- reading


def _as_sdp(sdp: bytes | str | SessionDescription) -> SessionDescription:
    return sdp if isinstance(sdp, SessionDescription) else parse_sdp(sdp)


def _is_dtls_proto(proto: str) -> bool:
    return proto.upper().startswith("UDP/TLS/RTP/")


def _is_savp(proto: str) -> bool:
    p = proto.upper()
    return p.endswith(("/SAVP", "/SAVPF"))


def _media_address(sdp: SessionDescription, m: Media) -> str | None:
    conn = sdp.connection_for(m)
    if conn is None or conn.is_hold or conn.nettype != "IN" or not _is_ip(conn.address):
        return None
    return conn.address


def _multicast(sdp: SessionDescription, m: Media) -> bool:
    """The stream's media goes to a multicast group: the unicast relay must not send there."""
    conn = sdp.connection_for(m)
    ip = None if conn is None else _ip(conn.address)
    return ip is not None and ip.is_multicast


def _rtcp_address(m: Media, rtp: Address | None, mux: bool) -> Address | None:
    if rtp is None:
        return None
    if mux:
        return rtp
    rtcp = m.rtcp
    if rtcp is None:
        return (rtp[0], rtp[1] + 1)
    port, addr = rtcp
    return (addr if addr is not None and _is_ip(addr) else rtp[0], port)


@functools.lru_cache(maxsize=1024)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP literal ``text`` names, or None. Cached: every offer and answer reads the same
    few peer addresses again (bounded, as peers choose what goes in)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_ip(text: str) -> bool:
    return _ip(text) is not None


def _to_params(crypto: CryptoAttribute, policy: LegPolicy) -> SrtpParams | None:
    """The SRTP params a crypto line asks for, or None if this leg must decline it."""
    if crypto.suite not in policy.offerable_suites:
        return None
    if len(crypto.keys) != 1 or crypto.has_mki:
        return None  # the media layer runs one key per direction and no MKI
    unencrypted_srtcp = False
    for param in crypto.session_params:
        if param == UNENCRYPTED_SRTCP and policy.accept_unencrypted_srtcp:
            unencrypted_srtcp = True
        elif (param.startswith("KDR=") and crypto.kdr == 0) or grammar.WSH.fullmatch(param):
            continue
        else:
            return None  # UNENCRYPTED_SRTP, UNAUTHENTICATED_SRTP, KDR>0, FEC_*, unknown
    try:
        return SrtpParams(crypto.suite, crypto.material, unencrypted_srtcp=unencrypted_srtcp)
    except InvalidParams:
        return None


def _cryptos(m: Media) -> list[CryptoAttribute]:
    """The stream's crypto lines; a malformed one is declined, not fatal (RFC 4568 §7.1.2)."""
    out = []
    for value in m.get_all("crypto"):
        try:
            out.append(parse_crypto(value))
        except SdpError:
            continue
    return out


def choose_crypto(m: Media, policy: LegPolicy) -> tuple[CryptoAttribute, SrtpParams] | None:
    """The peer's crypto line we accept: first in OUR suite order, then in the peer's order."""
    usable = [(c, p) for c in _cryptos(m) if (p := _to_params(c, policy)) is not None]
    for suite in policy.offerable_suites:
        for c, p in usable:
            if c.suite == suite:
                return c, p
    return None


def _stream_base(sdp: SessionDescription, i: int, m: Media, mux: bool) -> dict:
    address = _media_address(sdp, m)
    rtp = (address, m.port) if address is not None and m.port else None
    return {"index": i, "kind": m.kind, "proto": m.proto, "rtp": rtp,
            "rtcp": _rtcp_address(m, rtp, mux), "rtcp_mux": mux,
            "direction": sdp.direction_for(m), "formats": tuple(m.formats)}


def _rejected(i: int, m: Media, reason: str) -> RemoteStream:
    return RemoteStream(i, m.kind, m.proto, False, formats=tuple(m.formats), reason=reason)


def _read_offer_stream(sdp: SessionDescription, i: int, m: Media, policy: LegPolicy
                       ) -> RemoteStream:
    if m.rejected:
        return _rejected(i, m, "port 0 in offer")
    if _multicast(sdp, m):
        return _rejected(i, m, "multicast connection address")
    if not m.is_rtp:
        if policy.media in ("rtp", "srtp-optional"):
            return RemoteStream(**_stream_base(sdp, i, m, False), accepted=True)
        return _rejected(i, m, f"{m.proto} cannot be protected on a {policy.media} leg")
    base = _stream_base(sdp, i, m, policy.rtcp_mux and m.rtcp_mux)
    dtls = _is_dtls_proto(m.proto) or (_is_savp(m.proto) and m.has("fingerprint"))
    if policy.media == "dtls-srtp":
        if not dtls:
            return _rejected(i, m, f"{m.proto} offered on a dtls-srtp leg")
        return RemoteStream(**base, accepted=True, dtls=True)
    if dtls and _is_dtls_proto(m.proto):
        return _rejected(i, m, f"DTLS-SRTP offered on a {policy.media} leg")
    if policy.media == "rtp":
        if _is_savp(m.proto):
            return _rejected(i, m, f"{m.proto} offered on an rtp leg")
        return RemoteStream(**base, accepted=True)
    chosen = choose_crypto(m, policy)
    if chosen is not None:
        crypto, params = chosen
        return RemoteStream(**base, accepted=True, remote_key=params, crypto_tag=crypto.tag)
    if policy.media == "srtp-optional" and not _is_savp(m.proto):
        return RemoteStream(**base, accepted=True)
    return _rejected(i, m, "no acceptable a=crypto")


def read_offer(sdp: bytes | str | SessionDescription, policy: LegPolicy) -> Negotiation:
    """Read a peer's offer under this leg's policy.

    Raises SdpError(400) when malformed, SdpError(488) when no stream is acceptable. Streams the
    policy cannot use come back with ``accepted=False`` (answer them with port 0).
    """
    desc = _as_sdp(sdp)
    streams = tuple(_read_offer_stream(desc, i, m, policy) for i, m in enumerate(desc.media))
    if not any(s.accepted for s in streams):
        reasons = "; ".join(sorted({s.reason for s in streams})) or "no m= lines"
        raise unacceptable(f"no acceptable stream in offer ({reasons})")
    return Negotiation(desc, streams)


def _our_keys_by_tag(m: Media) -> dict[int, CryptoAttribute]:
    return {c.tag: c for c in _cryptos(m)}


def _read_answer_stream(answer: SessionDescription, i: int, ours: Media, m: Media,
                        policy: LegPolicy) -> RemoteStream:
    if ours.rejected or m.rejected:
        return _rejected(i, m, "port 0 in answer" if m.rejected else "we offered port 0")
    if _multicast(answer, m):
        return _rejected(i, m, "multicast connection address")
    if m.proto.upper() != ours.proto.upper():
        raise unacceptable(f"answer changed the transport of stream {i}")
    mux = ours.rtcp_mux and m.rtcp_mux
    base = _stream_base(answer, i, m, mux)
    if not m.is_rtp:
        return RemoteStream(**base, accepted=True)
    if policy.media == "dtls-srtp":
        return RemoteStream(**base, accepted=True, dtls=True)
    if not policy.sdes:
        return RemoteStream(**base, accepted=True)
    theirs = _cryptos(m)
    if not theirs:
        if policy.media == "srtp-optional" and not _is_savp(ours.proto):
            return RemoteStream(**base, accepted=True)
        raise unacceptable(f"answer has no a=crypto for stream {i}")
    if len(theirs) != 1:
        raise unacceptable(f"answer has {len(theirs)} a=crypto lines for stream {i}")
    crypto = theirs[0]
    offered = _our_keys_by_tag(ours).get(crypto.tag)
    if offered is None or offered.suite != crypto.suite:
        raise unacceptable(f"answer's a=crypto for stream {i} matches none we offered")
    remote = _to_params(crypto, policy)
    local = _to_params(offered, policy)
    if remote is None or local is None:
        raise unacceptable(f"answer's a=crypto for stream {i} is not acceptable")
    return RemoteStream(**base, accepted=True, remote_key=remote, local_key=local,
                        crypto_tag=crypto.tag)


def read_answer(our_offer: SessionDescription, answer: bytes | str | SessionDescription,
                policy: LegPolicy) -> Negotiation:
    """Read the peer's answer to ``our_offer`` (as built by ``build_offer``).

    Each accepted SDES stream carries both keys: the peer's (``remote_key``) and the one of ours
    its crypto tag selected (``local_key``). Raises SdpError(488) when the answer breaks RFC 3264
    (m-line count, transport) or, on an SDES leg, picks no key we offered.
    """
    desc = _as_sdp(answer)
    if len(desc.media) != len(our_offer.media):
        raise unacceptable(f"answer has {len(desc.media)} m= lines, offer had "
                           f"{len(our_offer.media)}")
    streams = tuple(_read_answer_stream(desc, i, ours, m, policy)
                    for i, (ours, m) in enumerate(zip(our_offer.media, desc.media, strict=True)))
    return Negotiation(desc, streams)


# --------------------------------------------------------------------------- writing


def _proto_for(proto: str, policy: LegPolicy) -> str:
    feedback = "F" if proto.upper().endswith("F") else ""
    if policy.media == "srtp":
        return f"RTP/SAVP{feedback}"
    if policy.media == "dtls-srtp":
        return f"UDP/TLS/RTP/SAVP{feedback}"
    return f"RTP/AVP{feedback}"


def _clean_session(template: SessionDescription, origin: Origin, media: list[Media]
                   ) -> SessionDescription:
    """A new session level from ``template`` minus the other side's identity and transport;
    only what is kept gets copied."""
    lines = [(t, v) for t, v in template.lines if t not in _FOREIGN_SESSION_LINES]
    if not any(t == "t" for t, _ in lines):
        lines.append(("t", "0 0"))
    attributes = [a.clone() for a in template.attributes
                  if a.name not in FOREIGN_ATTRIBUTES and a.name not in DIRECTIONS
                  and not (a.name == "group" and (a.value or "").startswith("BUNDLE"))]
    conn = template.connection
    return SessionDescription(origin.clone(), "-", None if conn is None else conn.clone(), lines,
                              attributes, media)


def _reject(m: Media, proto: str) -> None:
    m.port, m.port_count, m.proto = 0, None, proto
    m.connection = None
    m.lines.clear()
    m.attributes.clear()


def _fill(m: Media, stream: OurStream, direction: str, mux: bool, cryptos: list[str]) -> None:
    """Put our address, ports, direction and keys into a copied m-section."""
    m.port, m.port_count = stream.rtp[1], None
    m.connection = Connection.for_address(stream.rtp[0])
    m.lines = [(t, v) for t, v in m.lines if t not in _FOREIGN_MEDIA_LINES]
    m.attributes = [a for a in m.attributes if a.name not in FOREIGN_ATTRIBUTES]
    if m.direction is not None or direction != "sendrecv":
        m.set_direction(direction)
    rtcp = stream.rtcp
    if rtcp is not None and rtcp != stream.rtp and not mux:
        if rtcp[0] != stream.rtp[0]:
            conn = Connection.for_address(rtcp[0])
            m.add("rtcp", f"{rtcp[1]} {conn.nettype} {conn.addrtype} {conn.address}")
        elif rtcp[1] != stream.rtp[1] + 1:
            m.add("rtcp", str(rtcp[1]))
    if mux:
        m.add("rtcp-mux")
    for value in cryptos:
        m.add("crypto", value)
    m.attributes.extend(a.clone() for a in stream.attributes)


def _session_connection(sdp: SessionDescription) -> None:
    """Hoist the first active stream's c= to session level (how phones write SDP)."""
    active = [m for m in sdp.media if not m.rejected and m.connection is not None]
    if not active:
        if sdp.connection is None or sdp.connection.is_hold:
            sdp.connection = Connection.for_address(sdp.origin.address)
        return
    sdp.connection = active[0].connection
    for m in active:
        if m.connection is not None and str(m.connection) == str(sdp.connection):
            m.connection = None


def build_offer(template: SessionDescription, streams: Sequence[OurStream | None],
                policy: LegPolicy, origin: Origin) -> SessionDescription:
    """Our offer on a leg, from the other leg's offer (or our previous one) as template.

    Codecs, fmtp, ptime, direction and unknown attributes are kept; the other side's addresses,
    identity lines, keys, fingerprints and ICE are removed. ``streams[i]`` None, a port-0
    template stream, or a stream this policy cannot carry is offered with port 0. SDES legs need
    ``keys`` in every active ``OurStream`` (see ``offer_keys``); tags are 1..n in key order.
    """
    if len(streams) != len(template.media):
        raise ValueError("one OurStream (or None) per template m= line is required")
    sdp = _clean_session(template, origin, [m.clone() for m in template.media])
    for m, stream, src in zip(sdp.media, streams, template.media, strict=True):
        proto = _proto_for(m.proto, policy) if m.is_rtp else m.proto
        plain_ok = policy.media in ("rtp", "srtp-optional")
        if stream is None or m.rejected or (not m.is_rtp and not plain_ok):
            _reject(m, proto)
            continue
        cryptos: list[str] = []
        if m.is_rtp and policy.sdes:
            if not stream.keys:
                raise ValueError("an SDES offer needs our keys for every active stream")
            cryptos = [format_crypto(tag, k.suite, k.key, _session_params(k))
                       for tag, k in enumerate(stream.keys, start=1)]
        m.proto = proto
        _fill(m, stream, template.direction_for(src), m.is_rtp and policy.rtcp_mux, cryptos)
    _session_connection(sdp)
    return sdp


def _session_params(key: SrtpParams) -> tuple[str, ...]:
    return ((UNENCRYPTED_SRTCP,) if key.unencrypted_srtcp else ()) + (
        ("UNENCRYPTED_SRTP",) if key.unencrypted_srtp else ())


def build_answer(offer: Negotiation, template: SessionDescription | None,
                 streams: Sequence[OurStream | None], policy: LegPolicy, origin: Origin
                 ) -> SessionDescription:
    """Our answer to a peer's offer (as read by ``read_offer``).

    ``template`` is the other leg's answer (its codecs, ptime, direction) or None to answer with
    the offer's own formats. A stream is answered with port 0 when the offer rejected it, our
    reading did not accept it, ``streams[i]`` is None or the template rejected it. On SDES
    streams ``streams[i].keys`` holds our one key, for the suite ``offer.streams[i]`` chose; the
    answer carries it under the peer's crypto tag.
    """
    their = offer.sdp
    if len(streams) != len(their.media):
        raise ValueError("one OurStream (or None) per offered m= line is required")
    base = template if template is not None else their
    sdp = _clean_session(base, origin, [])
    for i, (offered, reading, stream) in enumerate(zip(their.media, offer.streams, streams,
                                                       strict=True)):
        src = base.media[i] if i < len(base.media) else None
        usable = src is not None and src.kind == offered.kind and not src.rejected
        m = (src if usable and src is not None else offered).clone()
        if template is not None and m.is_rtp:
            m.formats = [f for f in m.formats if f in offered.formats]
        sdp.media.append(m)
        if stream is None or not reading.accepted or not usable or not m.formats:
            m.formats = m.formats or list(offered.formats)
            _reject(m, offered.proto)
            continue
        cryptos: list[str] = []
        if reading.crypto_tag is not None:
            if len(stream.keys) != 1 or stream.keys[0].suite != reading.suite:
                raise ValueError(f"answer needs exactly one key of suite {reading.suite}")
            key = stream.keys[0]
            cryptos = [format_crypto(reading.crypto_tag, key.suite, key.key,
                                     _session_params(key))]
        m.proto = offered.proto
        direction = base.direction_for(src) if template is not None else _answer_direction(
            their.direction_for(offered))
        _fill(m, stream, direction, reading.rtcp_mux, cryptos)
    _session_connection(sdp)
    return sdp


def _answer_direction(offered: str) -> str:
    """RFC 3264 §6.1: the answer's direction mirrors the offer's."""
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offered, offered)


__all__ = [
    "FOREIGN_ATTRIBUTES",
    "LegPolicy",
    "Negotiation",
    "OurStream",
    "RemoteStream",
    "SdpError",
    "build_answer",
    "build_offer",
    "choose_crypto",
    "new_origin",
    "next_origin",
    "offer_keys",
    "read_answer",
    "read_offer",
]
