"""What captured packets reveal: plain RTP carrying a known tone, SIP text, SDES keys.

Pure functions over payload bytes, so the same checks run on any capture source.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.interop.tone import tone_coverage, ulaw_decode

PCMU_FRAME = 160  # 20 ms of G.711 at 8 kHz


def rtp_header_len(data: bytes) -> int | None:
    """Header length if ``data`` looks like RTP (not RTCP, not STUN/DTLS), else None."""
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    if 192 <= data[1] <= 223:  # RTCP packet types 192-223 (RFC 5761 demux)
        return None
    n = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < n + 4:
            return None
        n += 4 + 4 * int.from_bytes(data[n + 2:n + 4], "big")
    return n if n <= len(data) else None


def rtp_packets(payloads: Iterable[bytes]) -> list[bytes]:
    return [p for p in payloads if rtp_header_len(p) is not None]


def plain_pcmu(packets: Iterable[bytes]) -> list[bytes]:
    """RTP packets whose body is exactly one bare PCMU frame: no SRTP auth tag after it."""
    out = []
    for p in packets:
        n = rtp_header_len(p)
        if n is not None and p[1] & 0x7F == 0 and len(p) - n == PCMU_FRAME:
            out.append(p)
    return out


def audible_tone(packets: Iterable[bytes], freq: float) -> float:
    """Tone coverage of the concatenated mu-law payloads, as if the capture were played."""
    samples: list[int] = []
    for p in packets:
        n = rtp_header_len(p)
        if n is not None:
            samples += ulaw_decode(p[n:n + PCMU_FRAME])
    return tone_coverage(samples, freq)


def sip_texts(payloads: Iterable[bytes]) -> list[bytes]:
    return [p for p in payloads if b"SIP/2.0" in p[:200]]
