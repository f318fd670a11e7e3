"""Audio for media tests: G.711 µ-law, sine tones as 20 ms PCMU frames, WAV files, and a
Goertzel detector so a test can tell which tone reached which side (pure Python)."""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Iterable, Iterator
from pathlib import Path

RATE = 8000
FRAME = 160  # samples in 20 ms at 8 kHz
_BIAS = 0x84
_CLIP = 32635


def ulaw_encode(sample: int) -> int:
    """One 16-bit linear sample to a G.711 µ-law byte."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), _CLIP) + _BIAS
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    sign, exponent, mantissa = byte & 0x80, (byte >> 4) & 0x07, byte & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    return -(magnitude - _BIAS) if sign else magnitude - _BIAS


_DECODE = [ulaw_decode(b) for b in range(256)]


def sine(freq: float, count: int, start: int = 0, amplitude: int = 8000) -> list[int]:
    """``count`` samples of a sine tone, starting at sample index ``start`` (phase-continuous)."""
    step = 2 * math.pi * freq / RATE
    return [int(amplitude * math.sin(step * (start + i))) for i in range(count)]


def tone_frames(freq: float, amplitude: int = 8000) -> Iterator[bytes]:
    """Endless phase-continuous 20 ms PCMU payloads of one tone."""
    n = 0
    while True:
        yield bytes(ulaw_encode(s) for s in sine(freq, FRAME, n, amplitude))
        n += FRAME


def pcmu_to_samples(payloads: Iterable[bytes]) -> list[int]:
    return [_DECODE[b] for p in payloads for b in p]


def goertzel_power(samples: list[int], freq: float) -> float:
    """Normalised power of ``freq`` in ``samples`` (0..~1 for a full-scale pure tone)."""
    if not samples:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    energy = sum(x * x for x in samples) or 1
    return power / (energy * len(samples) / 2)


def dominant(samples: list[int], candidates: Iterable[float]) -> float | None:
    """Which candidate frequency carries most of the signal's energy (None for silence)."""
    if not samples or max(abs(x) for x in samples) < 200:
        return None
    powers = {f: goertzel_power(samples, f) for f in candidates}
    best = max(powers, key=powers.__getitem__)
    return best if powers[best] > 0.5 else None


def detect_tone(payloads: Iterable[bytes], freq: float, min_fraction: float = 0.8) -> bool:
    """True if at least ``min_fraction`` of the 20 ms PCMU frames are dominated by ``freq``."""
    frames = list(payloads)
    if not frames:
        return False
    hits = sum(1 for p in frames if goertzel_power(pcmu_to_samples([p]), freq) > 0.5)
    return hits >= min_fraction * len(frames)


def write_wav(path: Path, samples: list[int]) -> Path:
    """Mono 16-bit 8 kHz WAV (what baresip's aufile plays and sndfile writes)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return path


def write_tone_wav(path: Path, freq: float, seconds: float, amplitude: int = 8000) -> Path:
    return write_wav(path, sine(freq, int(RATE * seconds), 0, amplitude))


def read_wav(path: Path) -> list[int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected mono 16-bit audio")
        data = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(data) // 2}h", data))
