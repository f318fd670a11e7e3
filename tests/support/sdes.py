"""SDES keys and minimal SDP for the test peers, written independently of gateway.sdp.

A peer needs three things: fresh keys (``SdesKey.generate``), an offer or answer carrying them
(``make_sdp``/``answer_sdp``), and a reading of the other side's SDP (``parse_media``). The parsing
here is deliberately small and tolerant: it takes what a phone would take and nothing more.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field

import pylibsrtp

# suite -> (key || salt length, pylibsrtp profile)
SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (30, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80),
    "AES_CM_128_HMAC_SHA1_32": (30, pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32),
    "AEAD_AES_128_GCM": (28, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM),
    "AEAD_AES_256_GCM": (44, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM),
}
_CRYPTO = re.compile(r"^a=crypto:(\d+)\s+(\w+)\s+inline:([A-Za-z0-9+/=]+)(\S*)(.*)$")


@dataclass(frozen=True)
class SdesKey:
    """One SRTP master key || salt for a suite; repr never shows the key."""

    suite: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"test peers do not run {self.suite}")
        if len(self.key) != SUITES[self.suite][0]:
            raise ValueError(f"{self.suite} needs {SUITES[self.suite][0]} bytes")

    @classmethod
    def generate(cls, suite: str = "AES_CM_128_HMAC_SHA1_80") -> SdesKey:
        return cls(suite, os.urandom(SUITES[suite][0]))

    @property
    def profile(self) -> int:
        return SUITES[self.suite][1]

    def crypto_value(self, tag: int) -> str:
        """The value after ``a=crypto:`` for this key under ``tag``."""
        return f"{tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"

    def crypto_line(self, tag: int) -> str:
        return f"a=crypto:{self.crypto_value(tag)}"


@dataclass
class MediaInfo:
    """One m-line of a remote SDP as a test peer understands it."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    address: str | None
    direction: str = "sendrecv"
    rtcp_mux: bool = False
    cryptos: list[tuple[int, SdesKey]] = field(default_factory=list, repr=False)
    crypto_params: dict[int, str] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list, repr=False)

    @property
    def addr(self) -> tuple[str, int] | None:
        return (self.address, self.port) if self.address and self.port else None

    def key_for_tag(self, tag: int) -> SdesKey | None:
        return next((k for t, k in self.cryptos if t == tag), None)


def _b64(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def parse_media(sdp: str | bytes) -> list[MediaInfo]:
    """The m-lines of an SDP with their effective address, direction, rtcp-mux and keys.
    Crypto lines for suites the peers cannot run, or with bad keys, are skipped."""
    text = sdp.decode("latin-1") if isinstance(sdp, bytes) else sdp
    session_addr = None
    session_dir = "sendrecv"
    out: list[MediaInfo] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.strip()
        if line.startswith("c="):
            addr = line.split()[-1].split("/")[0]
            if out:
                out[-1].address = addr
            else:
                session_addr = addr
        elif line.startswith("m="):
            parts = line[2:].split()
            out.append(MediaInfo(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:],
                                 session_addr, session_dir))
        elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            if out:
                out[-1].direction = line[2:]
            else:
                session_dir = line[2:]
        elif line.startswith("a=") and out:
            media = out[-1]
            media.attributes.append(line[2:])
            if line == "a=rtcp-mux":
                media.rtcp_mux = True
            m = _CRYPTO.match(line)
            if m and m.group(2) in SUITES:
                try:
                    media.cryptos.append((int(m.group(1)), SdesKey(m.group(2), _b64(m.group(3)))))
                    media.crypto_params[int(m.group(1))] = (m.group(4) + m.group(5)).strip()
                except ValueError:
                    continue
    return out


def make_sdp(address: str, port: int, *, keys: list[SdesKey] | None = None,
             tags: list[int] | None = None, proto: str | None = None,
             payloads: tuple[int, ...] = (0, 101), direction: str | None = None,
             rtcp_mux: bool = False, session_id: int = 4242, version: int = 1,
             extra: tuple[str, ...] = ()) -> str:
    """A phone-style single-audio-stream SDP. With ``keys`` it is SDES (tags 1..n unless
    ``tags`` given, proto RTP/SAVP unless ``proto`` given); without, plain RTP/AVP."""
    keys = keys or []
    proto = proto or ("RTP/SAVP" if keys else "RTP/AVP")
    tags = tags or list(range(1, len(keys) + 1))
    lines = ["v=0", f"o=testpeer {session_id} {version} IN IP4 {address}", "s=test peer",
             f"c=IN IP4 {address}", "t=0 0",
             f"m=audio {port} {proto} {' '.join(map(str, payloads))}"]
    names = {0: "PCMU/8000", 8: "PCMA/8000", 9: "G722/8000", 101: "telephone-event/8000"}
    lines += [f"a=rtpmap:{pt} {names[pt]}" for pt in payloads if pt in names]
    if 101 in payloads:
        lines.append("a=fmtp:101 0-15")
    lines.append("a=ptime:20")
    if rtcp_mux:
        lines.append("a=rtcp-mux")
    if direction:
        lines.append(f"a={direction}")
    lines += [k.crypto_line(t) for t, k in zip(tags, keys, strict=True)]
    lines += list(extra)
    return "\r\n".join(lines) + "\r\n"


@dataclass(frozen=True)
class Answer:
    """What ``answer_sdp`` decided: the SDP to send, and keys for the RtpEndpoint."""

    sdp: str
    remote: tuple[str, int] | None
    rx: SdesKey | None = field(default=None, repr=False)  # the offerer's key (we decrypt with it)
    tx: SdesKey | None = field(default=None, repr=False)  # our fresh key (we encrypt with it)


def answer_sdp(offer: str | bytes, address: str, port: int, *,
               suites: tuple[str, ...] = tuple(SUITES), rtcp_mux: bool | None = None,
               direction: str | None = None) -> Answer:
    """Answer the first audio stream of ``offer``: SDES if it carries a suite from ``suites``
    (first acceptable in the offer's order, its tag kept, fresh key of ours), plain otherwise.
    ValueError if it is SAVP with nothing acceptable."""
    media = next(m for m in parse_media(offer) if m.kind == "audio")
    chosen = next(((t, k) for t, k in media.cryptos if k.suite in suites), None)
    if chosen is None and "SAVP" in media.proto.upper():
        raise ValueError("offer is SRTP with no suite we accept")
    mux = media.rtcp_mux if rtcp_mux is None else rtcp_mux and media.rtcp_mux
    reply = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(media.direction,
                                                                 media.direction)
    payloads = tuple(int(f) for f in media.formats if f in ("0", "8", "9", "101")) or (0,)
    if chosen is None:
        return Answer(make_sdp(address, port, proto=media.proto, payloads=payloads,
                               direction=direction or reply, rtcp_mux=mux), media.addr)
    tag, rx = chosen
    tx = SdesKey.generate(rx.suite)
    text = make_sdp(address, port, keys=[tx], tags=[tag], proto=media.proto, payloads=payloads,
                    direction=direction or reply, rtcp_mux=mux)
    return Answer(text, media.addr, rx, tx)
