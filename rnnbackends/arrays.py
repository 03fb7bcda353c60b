"""One home for the array helpers every layer and backend shares: host copies, lengths and padding masks.

Sequences are time-major, X (T, B, D); ``lengths`` (B,) counts each row's valid steps (None: all T), and steps
t >= lengths[b] are padding.
"""
from __future__ import annotations

import numpy as np


def to_host(value):
    """A host NumPy array from a NumPy array, a CuPy array, a torch tensor or a Python scalar."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "get") and not isinstance(value, np.ndarray):
        value = value.get()
    return np.asarray(value)


def full_lengths(lengths, T, B):
    """``lengths`` as a host int64 array (B,); all T when None."""
    return np.full(B, T, dtype=np.int64) if lengths is None else np.asarray(to_host(lengths), dtype=np.int64)


def valid_steps(xp, lengths, T, B):
    """(T, B) bool array of ``xp``: True where step t is inside row b's sequence (t < lengths[b])."""
    return xp.asarray(np.arange(T)[:, None] < full_lengths(lengths, T, B)[None, :])


def reverse_index(lengths, T, B):
    """(T, B) host int: step t of row b read backwards within its length (L-1-t), padding steps left in place."""
    steps = np.arange(T)[:, None]
    lengths = full_lengths(lengths, T, B)[None, :]
    return np.where(steps < lengths, lengths - 1 - steps, steps)


def checked_lengths(lengths, T, B):
    """``lengths`` validated as integers (B,) with 1 <= lengths[b] <= T, as a host int64 array."""
    arr = to_host(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must hold integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},) (B from x), got {arr.shape}")
    if B and (arr.min() < 1 or arr.max() > T):
        raise ValueError(f"lengths must satisfy 1 <= lengths[b] <= T = {T}, got min {arr.min()} max {arr.max()}")
    return np.ascontiguousarray(arr, dtype=np.int64)
