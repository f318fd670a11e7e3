"""The media half of one call: the relay session and each leg's offer/answer state.

Leg 0 is A (the caller's side), leg 1 is B. An offer that arrives on one leg becomes our own offer
on the other leg; the answer that comes back there becomes our answer on the first. Keys are per
leg and never copied: the key we send with on a leg is generated here once and kept across
re-INVITEs (so one side's re-key does not re-key the other), and a peer's new inbound key is
installed at offer time next to the old one until the answer commits it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import Trunk
from gateway.media.api import (
    Address,
    LegConfig,
    LocalStream,
    MediaRelayApi,
    SessionInfo,
    SrtpParams,
    generate_params,
)
from gateway.sdp.errors import SdpError
from gateway.sdp.model import Origin, SessionDescription, parse_sdp
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
    if policy.media == "dtls-srtp":
        raise SdpError(488, f"trunk {trunk.name}: dtls-srtp is not wired into the call layer")
    return policy


@dataclass(slots=True)
class _LegState:
    trunk: Trunk
    policy: LegPolicy
    origin: Origin | None = None
    sent: SessionDescription | None = None           # our last offer or answer on this leg
    tx: dict[int, SrtpParams] = field(default_factory=dict)  # stream -> our key on this leg
    rx: dict[int, SrtpParams] = field(default_factory=dict)  # stream -> the peer's key


@dataclass(slots=True)
class _Pending:
    """An offer from ``src`` relayed as our offer on the other leg, awaiting its answer."""

    src: int
    offer: Negotiation
    our_offer: SessionDescription
    answer_keys: dict[int, SrtpParams]   # our key per stream for the answer on ``src``
    added_rx: list[int]                  # streams of ``src`` that got an add_rx
    answered: bool = False               # an early answer was already relayed to ``src``


class MediaBridge:
    """Offer/answer across the two legs of one call, with the relay kept in step.

    Errors: ``SdpError`` (400 malformed, 488 unacceptable), ``PortsExhausted`` from the relay
    (the caller answers 503). ``close()`` is idempotent and frees the relay session.
    """

    def __init__(self, relay: MediaRelayApi, a: Trunk, b: Trunk, sdp_address: str) -> None:
        self._relay = relay
        self._legs = (_LegState(a, leg_policy(a)), _LegState(b, leg_policy(b)))
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
        nego = read_offer(sdp, me.policy)
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
        streams: list[OurStream | None] = []
        for i, s in enumerate(nego.streams):
            if i >= count or not s.accepted:
                streams.append(None)
                continue
            keys: tuple[SrtpParams, ...] = ()
            if other.policy.sdes:
                known = other.tx.get(i)
                keys = (known,) if known is not None else offer_keys(other.policy)
            streams.append(self._our_stream(1 - src, i, keys))
        origin = self._bump_origin(1 - src)
        our_offer = build_offer(nego.sdp, streams, other.policy, origin)
        self._pending = _Pending(src, nego, our_offer, answer_keys, added)
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
            streams.append(self._our_stream(src, i, (key,) if key is not None else ()))
        origin = me.origin if p.answered and me.origin is not None else self._bump_origin(src)
        p.answered = True
        ours = build_answer(p.offer, theirs.sdp, streams, me.policy, origin)
        me.sent = ours
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
        return sdp.to_bytes()

    async def local_answer(self, leg: int, offer: bytes, answer: bytes) -> None:
        """The answer (in an ACK) to ``current_offer``: only this leg changes."""
        state = self._legs[leg]
        theirs = read_answer(parse_sdp(offer), answer, state.policy)
        await self._install(leg, theirs.streams)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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

    def _media_timeout(self) -> float | None:
        timeouts = [t.trunk.media_timeout for t in self._legs if t.trunk.media_timeout]
        return min(timeouts) if timeouts else None

    def _bump_origin(self, leg: int) -> Origin:
        state = self._legs[leg]
        state.origin = (new_origin(self._sdp_address) if state.origin is None
                        else next_origin(state.origin))
        return state.origin

    def _our_stream(self, leg: int, stream: int, keys: tuple[SrtpParams, ...]) -> OurStream:
        assert self._info is not None
        local: LocalStream = self._info.local(leg, stream)
        rtp = (self._sdp_address, local.rtp[1])
        rtcp = (self._sdp_address, local.rtcp[1])
        return OurStream(rtp=rtp, rtcp=rtcp, keys=keys)

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
        trunk = self._legs[leg].trunk
        rtp: Address | None = s.rtp
        cfg = LegConfig(remote_rtp=rtp, remote_rtcp=s.rtcp if rtp is not None else None,
                        rtcp_mux=s.rtcp_mux, rx=rx if tx is not None else None,
                        tx=tx if rx is not None else None, nat_learning=trunk.nat_learning,
                        accept_plain_rtcp=trunk.accept_unencrypted_srtcp)
        await self._relay.update_leg(self._sid, leg, s.index, cfg)
