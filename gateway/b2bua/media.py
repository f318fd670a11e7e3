"""The media half of one call: the relay session and each leg's offer/answer state.

Leg 0 is A (the caller's side), leg 1 is B. An offer that arrives on one leg becomes our own offer
on the other leg; the answer that comes back there becomes our answer on the first. Keys are per
leg and never copied: the key we send with on a leg is generated here once and kept across
re-INVITEs (so one side's re-key does not re-key the other), and a peer's new inbound key is
installed at offer time next to the old one until the answer commits it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.b2bua.call import LegMedia
from gateway.config import Config, DtlsSection, Trunk
from gateway.media.api import (
    Address,
    LegConfig,
    LocalStream,
    MediaError,
    MediaRelayApi,
    SessionInfo,
    SrtpParams,
    generate_params,
)
from gateway.media.dtls import Role
from gateway.media.dtls_events import HandshakeCompleted
from gateway.media.dtls_identity import DtlsIdentity
from gateway.media.dtls_leg import DtlsLeg
from gateway.sdp.capneg import apply_srtp_capabilities
from gateway.sdp.crypto import parse_crypto
from gateway.sdp.dtls import (
    DtlsParams,
    Setup,
    answer_setup,
    check_fingerprints,
    dtls_attributes,
    dtls_params,
    needs_new_association,
    new_tls_id,
    role_for_setup,
    role_from_answer,
)
from gateway.sdp.errors import SdpError
from gateway.sdp.model import Attribute, Media, Origin, SessionDescription, parse_sdp
from gateway.sdp.offer_answer import (
    LegPolicy,
    Negotiation,
    OurStream,
    RemoteStream,
    build_answer,
    build_offer,
    new_origin,
    next_origin,
    offer_keys,
    read_answer,
    read_offer,
)


def leg_policy(trunk: Trunk) -> LegPolicy:
    """The trunk's media policy, refusing SDES keys in clear unless the trunk allows it.

    Config validation enforces the same rule; this is the call layer's own check, so a config
    built some other way still cannot leak keys onto UDP/TCP.
    """
    policy = LegPolicy.from_trunk(trunk)
    if policy.sdes and trunk.transport != "tls" and not trunk.allow_sdes_over_insecure:
        raise SdpError(488, f"trunk {trunk.name}: SDES over {trunk.transport} is not allowed")
    return policy


# Attributes that name the other side's software (like User-Agent, which never crosses) or its
# users and hosts (RFC 5576 a=ssrc:<n> cname:user@host, as baresip writes it).
_AGENT_ATTRIBUTES = ("tool", "ssrc", "ssrc-group")


def _scrub(sdp: SessionDescription, *, feedback: bool = True) -> SessionDescription:
    """Drop agent attributes; without ``feedback``, offer the plain RTP/AVP or RTP/SAVP
    profile: a WebRTC-style SAVPF offer must not reach a PBX as AVPF, which most refuse."""
    sdp.remove(*_AGENT_ATTRIBUTES)
    for m in sdp.media:
        m.remove(*_AGENT_ATTRIBUTES)
        if not feedback and m.proto.upper() in ("RTP/AVPF", "RTP/SAVPF"):
            m.proto = m.proto[:-1]
            m.remove("rtcp-fb")
    return sdp


@dataclass(frozen=True, slots=True)
class DtlsContext:
    """Our DTLS certificate (loaded once) and the [dtls] limits, for dtls-srtp trunks."""

    identity: DtlsIdentity
    section: DtlsSection


def dtls_context(config: Config) -> DtlsContext | None:
    """Load our DTLS certificate when some trunk runs dtls-srtp (raises DtlsIdentityError)."""
    if not any(t.media == "dtls-srtp" for t in config.trunks):
        return None
    return DtlsContext(DtlsIdentity.from_config(config.dtls), config.dtls)


# RFC 3551 §6: static payload types that need no a=rtpmap.
STATIC_PAYLOADS = {"0": "PCMU", "3": "GSM", "4": "G723", "8": "PCMA", "9": "G722",
                   "13": "CN", "18": "G729"}
MAX_CODEC_NAME = 32  # the name comes from the peer's SDP and ends up in CDRs


def first_codec(sdp: SessionDescription) -> tuple[int, Media, str] | None:
    """The first RTP stream still in use and the first codec of its format list (which in an
    answer is the one both sides send, RFC 3264 §6.1)."""
    for i, m in enumerate(sdp.media):
        if m.rejected or not m.is_rtp or not m.formats:
            continue
        pt = m.formats[0]
        mapped = m.rtpmap.get(pt)
        name = mapped[0] if mapped is not None else STATIC_PAYLOADS.get(pt, f"pt{pt}")
        return i, m, name[:MAX_CODEC_NAME]
    return None


def _setup_for(role: Role) -> Setup:
    """The a=setup that keeps a running association's roles in a re-offer (RFC 5763 §5)."""
    return "active" if role == "client" else "passive"


@dataclass(slots=True)
class _Dtls:
    """One DTLS association of a leg's stream and what the peer last said about it."""

    leg: DtlsLeg
    role: Role | None = None
    remote: DtlsParams | None = None


@dataclass(slots=True)
class _LegState:
    trunk: Trunk
    policy: LegPolicy
    origin: Origin | None = None
    sent: SessionDescription | None = None           # our last offer or answer on this leg
    tx: dict[int, SrtpParams] = field(default_factory=dict)  # stream -> our key on this leg
    rx: dict[int, SrtpParams] = field(default_factory=dict)  # stream -> the peer's key
    dtls: dict[int, _Dtls] = field(default_factory=dict)     # stream -> DTLS association


@dataclass(slots=True)
class _Pending:
    """An offer from ``src`` relayed as our offer on the other leg, awaiting its answer."""

    src: int
    offer: Negotiation
    our_offer: SessionDescription
    answer_keys: dict[int, SrtpParams]   # our key per stream for the answer on ``src``
    added_rx: list[int]                  # streams of ``src`` that got an add_rx
    answered: bool = False               # an early answer was already relayed to ``src``
    answer_attrs: dict[int, tuple[Attribute, ...]] = field(default_factory=dict)  # DTLS, src
    starts: dict[int, tuple[Role, DtlsParams]] = field(default_factory=dict)  # src handshakes


class MediaBridge:
    """Offer/answer across the two legs of one call, with the relay kept in step.

    Errors: ``SdpError`` (400 malformed, 488 unacceptable), ``PortsExhausted`` from the relay
    (the caller answers 503). ``close()`` is idempotent and frees the relay session.
    ``media`` holds each leg's negotiated codec and suite, updated at every answer and, on
    DTLS-SRTP legs, when the handshake exports the keys.
    """

    def __init__(self, relay: MediaRelayApi, a: Trunk, b: Trunk, sdp_address: str, *,
                 dtls: DtlsContext | None = None,
                 on_failed: Callable[[str], None] | None = None,
                 media: tuple[LegMedia, LegMedia] | None = None) -> None:
        self._relay = relay
        self.media = media or (LegMedia(), LegMedia())
        self._main: list[int | None] = [None, None]   # per leg: the stream ``media`` describes
        self._idle: dict[int, float] = {}   # stream -> when the relay reported it idle, ringing
        self._watch: asyncio.Task[None] | None = None
        self._legs = (_LegState(a, leg_policy(a)), _LegState(b, leg_policy(b)))
        if dtls is None and any(t.media == "dtls-srtp" for t in (a, b)):
            raise SdpError(488, "dtls-srtp trunk but no DTLS certificate loaded")
        self._dtls = dtls
        self._on_failed = on_failed
        self._sdp_address = sdp_address
        self._info: SessionInfo | None = None
        self._pending: _Pending | None = None
        self._closed = False

    @property
    def session_id(self) -> str | None:
        return self._info.session_id if self._info is not None else None

    @property
    def offer_pending(self) -> bool:
        return self._pending is not None

    async def offer(self, src: int, sdp: bytes) -> bytes:
        """An offer arrived on leg ``src``: returns our offer for the other leg."""
        if self._pending is not None:
            raise SdpError(491, "an offer is already pending")
        me, other = self._legs[src], self._legs[1 - src]
        desc = parse_sdp(sdp)
        # RFC 5939: a best-effort SRTP offer's keys are in capabilities; use them where allowed
        configs = apply_srtp_capabilities(desc, me.policy.media in ("srtp", "srtp-optional"))
        nego = read_offer(desc, me.policy)
        if self._info is None:
            self._info = await self._relay.create_session(
                streams=len(nego.streams), rtcp_mux=(self._legs[0].policy.rtcp_mux,
                                                     self._legs[1].policy.rtcp_mux),
                timeout=self._media_timeout())
        count = len(self._info.legs[0])
        answer_keys: dict[int, SrtpParams] = {}
        added: list[int] = []
        for s in nego.streams:
            if s.index >= count or not s.accepted or s.remote_key is None:
                continue
            known = me.tx.get(s.index)
            answer_keys[s.index] = (known if known is not None and known.suite == s.suite
                                    else generate_params(s.suite or ""))
            if s.index in me.rx and me.rx[s.index] != s.remote_key:
                await self._relay.add_rx(self._sid, src, s.index, s.remote_key)
                added.append(s.index)
        pending = _Pending(src, nego, nego.sdp, answer_keys, added)
        for s in nego.streams:
            if s.index < count and s.accepted and s.dtls:
                self._dtls_offered(pending, s.index)
            acfg = configs[s.index].acfg(s.crypto_tag) if s.index in configs else None
            if acfg is not None and s.accepted:
                pending.answer_attrs[s.index] = (*pending.answer_attrs.get(s.index, ()), acfg)
        streams: list[OurStream | None] = []
        for i, s in enumerate(nego.streams):
            if i >= count or not s.accepted:
                streams.append(None)
                continue
            keys: tuple[SrtpParams, ...] = ()
            if other.policy.sdes:
                known = other.tx.get(i)
                keys = (known,) if known is not None else offer_keys(other.policy)
            attrs = self._dtls_offer_attrs(1 - src, i) if other.policy.media == "dtls-srtp" else ()
            streams.append(self._our_stream(1 - src, i, keys, attrs))
        origin = self._bump_origin(1 - src)
        pending.our_offer = _scrub(build_offer(nego.sdp, streams, other.policy, origin),
                                   feedback=other.policy.media == "dtls-srtp")
        our_offer = pending.our_offer
        self._pending = pending
        if self._legs[src].sent is None:
            await self._install_offerer(self._pending)
        other.sent = our_offer
        return our_offer.to_bytes()

    async def answer(self, sdp: bytes, *, final: bool = True) -> bytes:
        """The answer to our pending offer arrived: returns our answer for the offering leg.

        Early answers (18x) pass ``final=False`` and may be followed by another one (forks);
        the final answer commits both legs' keys and addresses in the relay.
        """
        p = self._require_pending()
        src, dst = p.src, 1 - p.src
        me, other = self._legs[src], self._legs[dst]
        theirs = read_answer(p.our_offer, sdp, other.policy)
        for st in theirs.streams:
            if st.accepted and st.dtls:
                self._dtls_answered(dst, theirs.sdp, st)
        await self._install(dst, theirs.streams)
        for s in theirs.streams:
            if s.accepted and s.local_key is not None:
                other.tx[s.index] = s.local_key
        await self._install_offerer(p, theirs)
        streams: list[OurStream | None] = []
        for i, s in enumerate(p.offer.streams):
            if i >= len(theirs.streams) or not theirs.streams[i].accepted or not s.accepted:
                streams.append(None)
                continue
            key = p.answer_keys.get(i)
            streams.append(self._our_stream(src, i, (key,) if key is not None else (),
                                            p.answer_attrs.get(i, ())))
        origin = me.origin if p.answered and me.origin is not None else self._bump_origin(src)
        p.answered = True
        ours = _scrub(build_answer(p.offer, theirs.sdp, streams, me.policy, origin))
        me.sent = ours
        self._note_media(dst, theirs.sdp)
        self._note_media(src, ours)
        for i, (role, params) in p.starts.items():
            s = p.offer.streams[i]
            if s.rtp is not None:
                me.dtls[i].leg.start(role, s.rtp, params.fingerprints, self._base(src, s))
        if final:
            self._pending = None
        return ours.to_bytes()

    async def reject(self) -> None:
        """The pending offer was refused on the other leg: forget its offer-time keys."""
        p = self._pending
        if p is None:
            return
        self._pending = None
        for i in p.added_rx:
            await self._relay.drop_rx(self._sid, p.src, i)

    def current_offer(self, leg: int) -> bytes:
        """A fresh offer of the current session on ``leg`` (answering an offerless re-INVITE)."""
        state = self._legs[leg]
        if state.sent is None:
            raise SdpError(488, "no session to offer yet")
        sdp = parse_sdp(state.sent.to_bytes())
        sdp.origin = self._bump_origin(leg)
        for i, m in enumerate(sdp.media):
            key = state.tx.get(i)
            if key is not None:   # offer only the key in use, not every suite offered once
                m.attributes = [a for a in m.attributes if a.name != "crypto"
                                or parse_crypto(a.value or "").material == key.key]
        return sdp.to_bytes()

    async def local_answer(self, leg: int, offer: bytes, answer: bytes) -> None:
        """The answer (in an ACK) to ``current_offer``: only this leg changes."""
        state = self._legs[leg]
        theirs = read_answer(parse_sdp(offer), answer, state.policy)
        await self._install(leg, theirs.streams)
        self._note_media(leg, theirs.sdp)

    def media_idle(self, stream: int, now: float) -> None:
        """The relay reported ``stream`` idle while the call was still ringing. It reports a
        stream only once until media flows again, so ``watch_idle`` checks it after answer.
        The latest report counts: early media in between re-armed the relay's timer."""
        self._idle[stream] = now

    def watch_idle(self, default_timeout: float, on_idle: Callable[[int], None]) -> None:
        """The call was answered: a stream reported idle while ringing gets ``on_idle(stream)``
        one media timeout from now unless media has flowed on it since (the relay's own timer
        then watches it again)."""
        if not self._idle or self._info is None or self._watch is not None or self._closed:
            return
        timeout = self._media_timeout() or default_timeout
        self._watch = asyncio.get_running_loop().create_task(
            self._recheck_idle(dict(self._idle), timeout, on_idle))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
        for state in self._legs:
            for d in state.dtls.values():
                d.leg.close()
        if self._info is not None:
            await self._relay.close_session(self._info.session_id)

    # ----------------------------------------------------------------- internals
    @property
    def _sid(self) -> str:
        assert self._info is not None
        return self._info.session_id

    def _require_pending(self) -> _Pending:
        if self._pending is None:
            raise SdpError(400, "an answer without an offer")
        return self._pending

    async def _recheck_idle(self, idle: dict[int, float], timeout: float,
                            on_idle: Callable[[int], None]) -> None:
        await asyncio.sleep(timeout)
        try:
            stats = await self._relay.stats(self._sid)
        except MediaError:
            return   # the session is gone: the call ended meanwhile
        for stream, since in sorted(idle.items()):
            last = [s.last_packet for leg in stats.legs for s in leg[stream:stream + 1]]
            if all(t is None or t <= since for t in last) and not self._closed:
                on_idle(stream)

    def _note_media(self, leg: int, answer: SessionDescription) -> None:
        """Record the codec and suite ``answer`` settles on ``leg`` (never the key)."""
        found = first_codec(answer)
        if found is None:
            return
        stream, m, codec = found
        state, out = self._legs[leg], self.media[leg]
        self._main[leg] = stream
        out.codec = codec
        out.suite = None
        if "SAVP" not in m.proto.upper():
            return
        key = state.tx.get(stream)
        d = state.dtls.get(stream)
        if d is not None:
            out.suite = d.leg.keys.suite if d.leg.keys is not None else None
        elif key is not None:
            out.suite = key.suite

    def _dtls_keys(self, leg: int, stream: int, event: HandshakeCompleted) -> None:
        if self._main[leg] == stream:
            self.media[leg].suite = event.keys.suite

    def _media_timeout(self) -> float | None:
        timeouts = [t.trunk.media_timeout for t in self._legs if t.trunk.media_timeout]
        return min(timeouts) if timeouts else None

    def _bump_origin(self, leg: int) -> Origin:
        state = self._legs[leg]
        state.origin = (new_origin(self._sdp_address) if state.origin is None
                        else next_origin(state.origin))
        return state.origin

    def _our_stream(self, leg: int, stream: int, keys: tuple[SrtpParams, ...],
                    attributes: tuple[Attribute, ...] = ()) -> OurStream:
        assert self._info is not None
        local: LocalStream = self._info.local(leg, stream)
        rtp = (self._sdp_address, local.rtp[1])
        rtcp = (self._sdp_address, local.rtcp[1])
        return OurStream(rtp=rtp, rtcp=rtcp, keys=keys, attributes=attributes)

    # ----------------------------------------------------------------- DTLS-SRTP
    def _new_dtls(self, leg: int, stream: int) -> _Dtls:
        assert self._dtls is not None
        state = self._legs[leg]
        old = state.dtls.pop(stream, None)
        if old is not None:
            old.leg.close()
        d = _Dtls(DtlsLeg.for_trunk(self._relay, self._sid, leg, stream,  # type: ignore[arg-type]
                                    self._dtls.identity, new_tls_id(), self._dtls.section,
                                    state.trunk, on_failed=self._dtls_failed,
                                    on_connected=lambda ev: self._dtls_keys(leg, stream, ev)))
        state.dtls[stream] = d
        return d

    def _dtls_failed(self, reason: str) -> None:
        if self._on_failed is not None and not self._closed:
            self._on_failed(f"dtls: {reason}")

    def _dtls_offered(self, p: _Pending, stream: int) -> None:
        """The peer on ``p.src`` offered DTLS: keep or renew the association, plan the answer."""
        assert self._dtls is not None
        params = dtls_params(p.offer.sdp, p.offer.sdp.media[stream])
        check_fingerprints(params, accept_sha1=self._dtls.section.accept_sha1_fingerprint)
        d = self._legs[p.src].dtls.get(stream)
        if d is None or d.role is None or needs_new_association(d.remote, params):
            setup = self._answer_setup(p, stream, params)
            d = self._new_dtls(p.src, stream)
            d.role = role_for_setup(setup)
            p.starts[stream] = (d.role, params)
        else:
            setup = _setup_for(d.role)
        d.remote = params
        p.answer_attrs[stream] = dtls_attributes(d.leg.fingerprint, setup, d.leg.tls_id)

    def _answer_setup(self, p: _Pending, stream: int, params: DtlsParams) -> Setup:
        """RFC 5763 §5 with the relay's reach in mind: an offered address of a family the relay
        cannot send to (linphone's dual-stack ``c=IN IP6`` while it sends from IPv4) can be
        answered only passively, and only on a trunk that learns addresses; otherwise no
        packet could ever reach the peer: 488 with Warning 301."""
        trunk = self._legs[p.src].trunk
        rtp = p.offer.streams[stream].rtp
        unreachable = rtp is not None and not _reachable(rtp[0], self._sdp_address)
        setup = answer_setup(params.setup, prefer_passive=trunk.nat_learning or unreachable)
        if unreachable and (setup == "active" or not trunk.nat_learning):
            raise SdpError(488, "offered media address family is not reachable from the relay",
                           warning=301)
        return setup

    def _dtls_offer_attrs(self, leg: int, stream: int) -> tuple[Attribute, ...]:
        """Our DTLS attributes in an offer on ``leg``: actpass for a new association, our
        settled role for a running one (hold, resume and codec changes keep it)."""
        d = self._legs[leg].dtls.get(stream)
        if d is None or d.role is None:
            d = self._new_dtls(leg, stream)
            return dtls_attributes(d.leg.fingerprint, "actpass", d.leg.tls_id)
        return dtls_attributes(d.leg.fingerprint, _setup_for(d.role), d.leg.tls_id)

    def _dtls_answered(self, leg: int, answer: SessionDescription, s: RemoteStream) -> None:
        """The DTLS peer on ``leg`` answered our offer: start (or keep) the handshake."""
        assert self._dtls is not None
        params = dtls_params(answer, answer.media[s.index])
        check_fingerprints(params, accept_sha1=self._dtls.section.accept_sha1_fingerprint)
        d = self._legs[leg].dtls[s.index]
        if d.role is not None and needs_new_association(d.remote, params):
            raise SdpError(488, "a new DTLS association in an answer to a re-offer")
        d.remote = params
        if d.role is None and s.rtp is not None:
            d.role = role_from_answer(params.setup)
            d.leg.start(d.role, s.rtp, params.fingerprints, self._base(leg, s))

    def _base(self, leg: int, s: RemoteStream) -> LegConfig:
        trunk = self._legs[leg].trunk
        rtp: Address | None = s.rtp
        return LegConfig(remote_rtp=rtp, remote_rtcp=s.rtcp if rtp is not None else None,
                         rtcp_mux=s.rtcp_mux, nat_learning=trunk.nat_learning,
                         accept_plain_rtcp=trunk.accept_unencrypted_srtcp)

    async def _install_offerer(self, p: _Pending, answer: Negotiation | None = None) -> None:
        """Point the offering leg at the addresses and keys of its offer.

        Streams the other leg rejected in its answer stay as they were."""
        count = len(self._info.legs[0]) if self._info else 0
        me = self._legs[p.src]
        for s in p.offer.streams:
            if s.index >= count or not s.accepted:
                continue
            if answer is not None and (s.index >= len(answer.streams)
                                       or not answer.streams[s.index].accepted):
                continue
            tx = p.answer_keys.get(s.index)
            await self._update(p.src, s, s.remote_key, tx)
            if s.remote_key is not None:
                me.rx[s.index] = s.remote_key
                assert tx is not None
                me.tx[s.index] = tx

    async def _install(self, leg: int, streams: tuple[RemoteStream, ...]) -> None:
        count = len(self._info.legs[0]) if self._info else 0
        state = self._legs[leg]
        for s in streams:
            if s.index >= count or not s.accepted:
                continue
            await self._update(leg, s, s.remote_key, s.local_key)
            if s.remote_key is not None:
                state.rx[s.index] = s.remote_key

    async def _update(self, leg: int, s: RemoteStream, rx: SrtpParams | None,
                      tx: SrtpParams | None) -> None:
        base = self._base(leg, s)
        d = self._legs[leg].dtls.get(s.index)
        if d is not None:
            if s.rtp is not None and d.role is not None:
                d.leg.set_remote(s.rtp, base)
            cfg = d.leg.config(base)
        elif rx is not None and tx is not None:
            cfg = dataclasses.replace(base, rx=rx, tx=tx)
        else:
            cfg = base
        await self._relay.update_leg(self._sid, leg, s.index, cfg)


def _reachable(address: str, relay_address: str) -> bool:
    """Can the relay's sockets (of ``relay_address``'s family) send to ``address``?"""
    if relay_address == "::":
        return True
    return (":" in address) == (":" in relay_address)
