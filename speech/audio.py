"""PCM helpers: bytes <-> float arrays, resampling, chunking. numpy only.

The wire carries PCM16 little-endian mono; models want float32 at their own
rate (16 kHz for Whisper, 22.05 kHz comes out of espeak-ng).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from speech.errors import AudioFormatError

MIN_RATE, MAX_RATE = 8_000, 96_000


def pcm16_to_float(data: bytes) -> np.ndarray:
    """PCM16 LE bytes to float32 in [-1, 1]."""
    if len(data) % 2:
        raise AudioFormatError(f"PCM16 needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] to PCM16 LE bytes (clipped)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def check_rate(rate: int) -> int:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioFormatError(f"sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    return rate


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited resampling (windowed-sinc low-pass, then interpolation)."""
    if src == dst or samples.size == 0:
        return samples.astype(np.float32, copy=False)
    if dst < src:
        samples = _lowpass(samples, cutoff=0.45 * dst / src)
    n_out = max(1, math.floor(samples.size * dst / src))
    positions = np.arange(n_out, dtype=np.float64) * (src / dst)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def _lowpass(samples: np.ndarray, cutoff: float, taps: int = 63) -> np.ndarray:
    """FIR low-pass; ``cutoff`` as a fraction of the sample rate (< 0.5)."""
    n = np.arange(taps) - (taps - 1) / 2
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
    kernel /= kernel.sum()
    return np.convolve(samples, kernel.astype(np.float32), mode="same")


def chunks(data: bytes, *, rate: int, chunk_ms: int) -> Iterator[bytes]:
    """Split PCM16 bytes into chunks of ``chunk_ms`` (the last may be shorter)."""
    step = max(2, rate * chunk_ms // 1000 * 2)
    for offset in range(0, len(data), step):
        yield data[offset : offset + step]


def rms(pcm: bytes) -> float:
    """Root-mean-square level of PCM16 audio (0..1)."""
    samples = pcm16_to_float(pcm)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
