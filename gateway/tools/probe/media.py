"""Media policy checks: what SDP offers the target accepts, and what its answers carry.

Offers are built here as the probe's test vectors; answers are read with the gateway's own SDP
and SDES parsers, raw (no policy filtering), so the judgement sees what the target really said.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.media.api import SrtpParams, generate_params
from gateway.sdp.crypto import NULL_SUITES, CryptoAttribute, parse_crypto
from gateway.sdp.errors import SdpError
from gateway.sdp.model import SessionDescription, parse_sdp
from gateway.sip.message import SipResponse
from gateway.tools.probe.findings import Finding, judge, skip
from gateway.tools.probe.sipreq import Exchange

REF_PLAIN = "3GPP TS 33.210 Annex C.2; RFC 3264 §6; RFC 3261 §21.4.26 (488)"
REF_SDES_INSECURE = "RFC 4568 §8.3; 3GPP TS 33.210 Annex C.2"
REF_NULL = "RFC 4568 §6.2; RFC 3711 §5 (NULL cipher only for debugging)"
REF_KEY_REUSE = "RFC 4568 §6.1 (each direction its own key); RFC 3711 §9.1"
STRONG = ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_80")


@dataclass(frozen=True)
class Offer:
    """An SDP offer and the keys in it (ours; compared with the answer, never printed)."""

    body: bytes
    keys: tuple[tuple[int, str, bytes], ...]  # tag, suite, key||salt


def build_offer(address: str, port: int, proto: str, suites: Sequence[str] = (), *,
                mark: str = "-", extra: Sequence[str] = ()) -> Offer:
    """One audio stream (PCMU, telephone-event); NULL suites get a random key of their size."""
    keys = []
    for tag, suite in enumerate(suites, start=1):
        material = (generate_params("AES_CM_128_HMAC_SHA1_80").key if suite in NULL_SUITES
                    else generate_params(suite).key)
        keys.append((tag, suite, material))
    ipv = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o={mark} {port} 1 IN {ipv} {address}", f"s={mark}",
             f"c=IN {ipv} {address}", "t=0 0", f"m=audio {port} {proto} 0 101",
             "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=sendrecv",
             *extra]
    for tag, suite, material in keys:
        lines.append(f"a=crypto:{tag} {suite} inline:{base64.b64encode(material).decode()}")
    return Offer(("\r\n".join(lines) + "\r\n").encode(), tuple(keys))


@dataclass
class Answer:
    """The first answer with SDP (a 2xx, else a reliable-looking 18x) and its reading."""

    response: SipResponse | None
    sdp: SessionDescription | None
    error: str | None = None

    @property
    def audio(self):  # type: ignore[no-untyped-def]
        if self.sdp is None:
            return None
        return next((m for m in self.sdp.media if m.kind == "audio"), None)

    @property
    def accepted(self) -> bool:
        audio = self.audio
        return audio is not None and audio.port != 0 and self.response is not None and (
            self.response.status < 300)

    def cryptos(self) -> list[CryptoAttribute]:
        audio = self.audio
        out = []
        for value in audio.get_all("crypto") if audio is not None else []:
            try:
                out.append(parse_crypto(value))
            except SdpError:
                continue
        return out

    def where(self) -> tuple[str, int] | None:
        audio = self.audio
        if audio is None or self.sdp is None:
            return None
        conn = self.sdp.connection_for(audio)
        return (conn.address, audio.port) if conn is not None else None


def read_answer(ex: Exchange) -> Answer:
    with_body = [r for r in ex.responses if r.body and r.status < 300 and r.status > 100]
    finals = [r for r in with_body if r.status >= 200]
    chosen = finals[0] if finals else (with_body[-1] if with_body else None)
    if chosen is None:
        return Answer(ex.final, None)
    try:
        return Answer(chosen, parse_sdp(chosen.body))
    except SdpError as exc:
        return Answer(chosen, None, f"unreadable SDP answer: {exc}")


def judge_plain_rtp(ex: Exchange | None, answer: Answer | None) -> Finding:
    check = "media.plain_rtp_refused"
    if ex is None or answer is None:
        return skip(check, "MUST", "not tried", REF_PLAIN)
    if answer.accepted and answer.audio is not None and "SAVP" not in answer.audio.proto:
        return judge(False, check, "MUST", f"RTP/AVP offer answered {answer.response.status} "
                     f"with {answer.audio.proto} on port {answer.audio.port}", REF_PLAIN)
    return judge(True, check, "MUST", f"RTP/AVP offer: {ex.describe()}", REF_PLAIN)


def judge_sdes_insecure(ex: Exchange | None, answer: Answer | None, transport: str) -> Finding:
    check = "media.sdes_over_insecure"
    if ex is None or answer is None:
        return skip(check, "MUST", "no non-TLS SIP endpoint named (--plain-sip)",
                    REF_SDES_INSECURE)
    keys = answer.cryptos()
    if keys:
        return judge(False, check, "MUST", f"SDES offer over {transport} answered "
                     f"{answer.response.status} with {len(keys)} key(s) in clear "
                     f"({keys[0].suite})", REF_SDES_INSECURE)
    return judge(True, check, "MUST", f"SDES offer over {transport}: {ex.describe()}, no keys "
                 "in any answer", REF_SDES_INSECURE)


def judge_null_suite(ex: Exchange | None, answer: Answer | None) -> Finding:
    check = "media.null_suite_refused"
    if ex is None or answer is None:
        return skip(check, "MUST", "not tried", REF_NULL)
    chosen = [c for c in answer.cryptos()]
    weak = [c for c in chosen if c.suite in NULL_SUITES or c.unencrypted_srtp
            or c.unauthenticated_srtp]
    if answer.accepted and weak:
        return judge(False, check, "MUST", f"offer NULL_HMAC_SHA1_80 first, then strong suites: "
                     f"answer chose {weak[0].suite}", REF_NULL)
    picked = chosen[0].suite if chosen else None
    return judge(True, check, "MUST", "offer NULL_HMAC_SHA1_80 first, then strong suites: "
                 + (f"answer chose {picked}" if picked and answer.accepted
                    else ex.describe()), REF_NULL)


def judge_key_reuse(ex: Exchange | None, answer: Answer | None, offer: Offer | None,
                    profile: str) -> list[Finding]:
    check = "media.answer_key_reuse"
    if ex is None or answer is None or offer is None:
        return [skip(check, "MUST", "not tried", REF_KEY_REUSE)]
    if not answer.accepted:
        return [skip(check, "MUST", f"SRTP call not answered: {ex.describe()}", REF_KEY_REUSE),
                skip("media.srtp_answer", "MUST", "SRTP call not answered", REF_KEY_REUSE)]
    ours = {material for _, _, material in offer.keys}
    theirs = answer.cryptos()
    reused = [c for c in theirs if any(k.material in ours for k in c.keys)]
    out = [judge(not reused, check, "MUST", "answer key is our offered key" if reused
                 else f"answer key is the target's own ({len(theirs)} crypto line(s))",
                 REF_KEY_REUSE)]
    audio = answer.audio
    proto = audio.proto if audio is not None else "?"
    srtp = "SAVP" in proto and bool(theirs)
    out.append(judge(srtp or profile != "interconnect", "media.srtp_answer", "MUST",
                     f"answer to an RTP/SAVP offer: {proto}"
                     + (f", {theirs[0].suite}" if theirs else ", no a=crypto"), REF_PLAIN))
    return out


def params_of(answer: Answer) -> SrtpParams | None:
    """The target's SDES key from an answer, for the bleed check's legitimate packets."""
    for c in answer.cryptos():
        try:
            return SrtpParams(c.suite, c.material)
        except ValueError:
            continue
    return None
