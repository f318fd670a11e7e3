"""Known test tones and their detection (Goertzel), so a test can tell who heard whom.

Each softphone plays a distinct tone; the receiving side's decoded recording must contain the
far end's frequency, block by block, for most of the call.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Sequence
from pathlib import Path

RATE = 8000
BLOCK = 800  # 100 ms at 8 kHz


def write_tone(path: Path, freq: float, seconds: float, amplitude: int = 8000) -> Path:
    """A mono 16-bit 8 kHz WAV of one sine tone (what baresip's aufile source plays)."""
    n = int(RATE * seconds)
    step = 2 * math.pi * freq / RATE
    frames = struct.pack(f"<{n}h", *(int(amplitude * math.sin(step * i)) for i in range(n)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(frames)
    return path


def read_samples(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected mono 16-bit audio")
        if w.getframerate() != RATE:
            raise ValueError(f"{path}: expected {RATE} Hz, got {w.getframerate()}")
        data = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data))


def tone_share(block: Sequence[float], freq: float, rate: int = RATE) -> float:
    """Fraction of the block's energy at ``freq`` (1.0 for a pure tone, ~0 for silence/other)."""
    n = len(block)
    energy = sum(x * x for x in block)
    if n == 0 or energy < n * 100.0:  # below ~-50 dBFS: silence
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return power / (energy * n / 2.0)


def tone_coverage(samples: Sequence[float], freq: float, threshold: float = 0.5,
                  rate: int = RATE) -> float:
    """Fraction of 100 ms blocks in which ``freq`` carries most of the energy."""
    blocks = [samples[i:i + BLOCK] for i in range(0, len(samples) - BLOCK + 1, BLOCK)]
    if not blocks:
        return 0.0
    return sum(tone_share(b, freq, rate) >= threshold for b in blocks) / len(blocks)


def ulaw_decode(data: bytes) -> list[int]:
    """G.711 mu-law to linear 16-bit (to check whether captured payload is audible tone)."""
    out = []
    for byte in data:
        u = ~byte & 0xFF
        t = ((u & 0x0F) << 3) + 0x84
        t <<= (u & 0x70) >> 4
        out.append((0x84 - t) if u & 0x80 else (t - 0x84))
    return out
