"""Waveforms: read and write audio files, and resample them.

Samples are float32 in [-1, 1], mono. WAV (8/16/24/32-bit PCM) needs only the standard library; other formats
(FLAC, OGG, ...) are read with ``soundfile`` when it is installed (``pip install 'rnnbackends[speech]'``).
"""
from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from ..files import write_atomically


def read_audio(path):
    """(samples (N,) float32 mono, sample rate) of a WAV file, or of any format soundfile reads."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such audio file")
    try:
        with wave.open(str(path), "rb") as f:
            width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError):
        return _read_with_soundfile(path)
    if width == 1:
        samples = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        samples = (raw[:, 0].astype(np.int32) << 8 | raw[:, 1].astype(np.int32) << 16
                   | raw[:, 2].astype(np.int8).astype(np.int32) << 24).astype(np.float32) / 2.0 ** 31
    else:
        dtype = {2: np.int16, 4: np.int32}[width]
        samples = np.frombuffer(frames, dtype).astype(np.float32) / float(-np.iinfo(dtype).min)
    return samples.reshape(-1, channels).mean(axis=1), rate


def _read_with_soundfile(path):
    """Formats other than PCM WAV, through soundfile."""
    try:
        import soundfile
    except ImportError:
        raise ValueError(f"{path}: not a PCM WAV file; other formats need soundfile: "
                         "pip install 'rnnbackends[speech]'") from None
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise ValueError(f"{path}: not an audio file soundfile can read ({exc})") from None
    return samples.mean(axis=1), rate


def write_wav(path, samples, rate):
    """Write float samples (N,) as a 16-bit PCM mono WAV file, atomically."""
    pcm = np.clip(np.round(np.asarray(samples) * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(rate))
        f.writeframes(pcm.tobytes())
    write_atomically(path, buffer.getvalue())


def resample(samples, rate, new_rate):
    """Band-limited resampling by the FFT: (N,) at ``rate`` -> (round(N·new_rate/rate),) at ``new_rate``."""
    samples = np.asarray(samples, dtype=np.float64)
    n = len(samples)
    m = max(int(round(n * new_rate / rate)), 1)
    if m == n or n == 0:
        return samples.astype(np.float32)
    spectrum = np.fft.rfft(samples)
    kept = np.zeros(m // 2 + 1, dtype=complex)
    bins = min(len(spectrum), len(kept))
    kept[:bins] = spectrum[:bins]
    return (np.fft.irfft(kept, m) * (m / n)).astype(np.float32)
