"""Glue between a SipTestUA and an RtpEndpoint: the media half of a test phone.

``sdes_offer``/``plain_offer`` make an offer for an endpoint; ``apply_answer`` installs what
came back; ``answerer`` gives ``ua.uas.answer`` a function that answers incoming offers and
points the endpoint at the caller, with fresh keys, like a real phone would.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.support.rtp import RtpEndpoint
from tests.support.sdes import SUITES, MediaInfo, SdesKey, answer_sdp, make_sdp, parse_media
from tests.support.sipmsg import SipMessage


def plain_offer(ep: RtpEndpoint, **kw) -> str:
    """An RTP/AVP offer for the endpoint's address."""
    return make_sdp(ep.addr[0], ep.port, rtcp_mux=ep.rtcp_mux, **kw)


def sdes_offer(ep: RtpEndpoint, suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80",), **kw
               ) -> tuple[str, list[SdesKey]]:
    """An RTP/SAVP offer with one fresh key per suite (tags 1..n); keep the keys for
    ``apply_answer``."""
    keys = [SdesKey.generate(s) for s in suites]
    return make_sdp(ep.addr[0], ep.port, keys=keys, rtcp_mux=ep.rtcp_mux, **kw), keys


def apply_answer(ep: RtpEndpoint, answer: str | bytes, offered: list[SdesKey] | None = None
                 ) -> MediaInfo:
    """Point the endpoint at the answerer and, for SDES, install our key for the tag it chose
    (tx) and its key (rx). Raises ValueError if an SDES offer got no usable crypto back."""
    media = next(m for m in parse_media(answer) if m.kind == "audio")
    ep.set_remote(media.addr)
    if offered:
        if not media.cryptos:
            if "SAVP" in media.proto.upper():
                raise ValueError("SRTP answer without a usable a=crypto")
            ep.set_keys()
            return media
        tag, rx = media.cryptos[0]
        if not 1 <= tag <= len(offered) or offered[tag - 1].suite != rx.suite:
            raise ValueError(f"answer chose tag {tag} / {rx.suite}, not what we offered")
        ep.set_keys(tx=offered[tag - 1], rx=rx)
    return media


def answerer(ep: RtpEndpoint, suites: tuple[str, ...] = tuple(SUITES), **kw
             ) -> Callable[[SipMessage], str]:
    """An ``ua.uas.answer`` function: answer the offer in the INVITE for this endpoint,
    set its remote address and keys (SDES when offered, plain otherwise)."""

    def answer(invite: SipMessage) -> str:
        result = answer_sdp(invite.body, ep.addr[0], ep.port, suites=suites, **kw)
        ep.set_remote(result.remote)
        ep.set_keys(tx=result.tx, rx=result.rx)
        return result.sdp

    return answer
