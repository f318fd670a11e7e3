"""What captured packets reveal: plain RTP carrying a known tone, SIP text, SDES keys.

Pure functions over payload bytes, so the same checks run on any capture source.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.interop.tone import tone_coverage, ulaw_decode

PCMU_FRAME = 160  # 20 ms of G.711 at 8 kHz
TAG_LENGTH = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4,
              "AEAD_AES_128_GCM": 16, "AEAD_AES_256_GCM": 16}


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


def trailer_lengths(packets: Iterable[bytes]) -> set[int]:
    """Bytes after one PCMU frame in each RTP-looking packet: the SRTP auth tag length (0 for
    plain RTP), so a capture can show that every packet carries a tag of the negotiated size."""
    out = set()
    for p in packets:
        n = rtp_header_len(p)
        if n is not None and p[1] & 0x7F == 0:
            out.add(len(p) - n - PCMU_FRAME)
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
