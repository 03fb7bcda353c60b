"""Log-mel filterbank features from a waveform, normalised per utterance (NumPy, on the host)."""
from __future__ import annotations

import numpy as np

WINDOW_SECONDS, HOP_SECONDS, NUM_MELS = 0.025, 0.010, 40


def hz_to_mel(hz):
    """The HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel):
    """Inverse of ``hz_to_mel``."""
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank(rate, n_fft, num_mels=NUM_MELS, low_hz=20.0, high_hz=None):
    """Triangular filters (num_mels, n_fft//2 + 1), equally spaced on the mel scale from ``low_hz`` to Nyquist."""
    high_hz = rate / 2 if high_hz is None else high_hz
    edges = mel_to_hz(np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_mels + 2))   # (M + 2,)
    bins = np.fft.rfftfreq(n_fft, 1.0 / rate)                                              # (n_fft//2 + 1,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel(samples, rate, num_mels=NUM_MELS):
    """Waveform (N,) -> log-mel energies (frames, num_mels): 25 ms Hann windows every 10 ms, pre-emphasis 0.97."""
    samples = np.asarray(samples, dtype=np.float64)
    window, hop = int(round(WINDOW_SECONDS * rate)), int(round(HOP_SECONDS * rate))
    n_fft = 1 << (window - 1).bit_length()
    emphasised = np.append(samples[:1], samples[1:] - 0.97 * samples[:-1])
    frames = max(1, 1 + (len(emphasised) - window + hop - 1) // hop)
    padded = np.pad(emphasised, (0, max(0, (frames - 1) * hop + window - len(emphasised))))
    starts = np.arange(frames)[:, None] * hop + np.arange(window)[None, :]
    spectrum = np.abs(np.fft.rfft(padded[starts] * np.hanning(window), n_fft)) ** 2      # (frames, n_fft//2 + 1)
    return np.log(spectrum @ mel_filterbank(rate, n_fft, num_mels).T + 1e-10)


def normalise(features):
    """Per-utterance normalisation: each band to zero mean and unit variance over the utterance's frames."""
    return ((features - features.mean(axis=0)) / (features.std(axis=0) + 1e-5)).astype(np.float32)


def utterance_features(samples, rate, num_mels=NUM_MELS):
    """Waveform -> normalised log-mel features (frames, num_mels) float32."""
    return normalise(log_mel(samples, rate, num_mels))
