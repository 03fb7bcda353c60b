"""Weight initialisers, drawn on the host from a NumPy Generator so a seed gives the same weights on every backend."""
from __future__ import annotations

import numpy as np


def uniform(shape, hidden_size, rng):
    """U(-1/√H, 1/√H): PyTorch's default for nn.RNN, the default here."""
    bound = 1.0 / np.sqrt(hidden_size)
    return rng.uniform(-bound, bound, size=shape)


def glorot(shape, hidden_size, rng):
    """Glorot/Xavier uniform: U(-√(6/(fan_in+fan_out)), +√(6/(fan_in+fan_out)))."""
    fan_in, fan_out = shape[0], shape[-1]
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def orthogonal(shape, hidden_size, rng):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one (Saxe et al. 2014)."""
    rows, cols = shape
    gaussian = rng.normal(size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diag(r))                                        # makes the distribution uniform
    return q if rows >= cols else q.T


INITIALIZERS = {"uniform": uniform, "glorot": glorot, "orthogonal": orthogonal}


def initialize(name, shape, hidden_size, rng):
    """A float64 host array of ``shape`` from the initialiser called ``name``."""
    if name not in INITIALIZERS:
        raise ValueError(f"unknown initialiser {name!r}; choose one of {', '.join(INITIALIZERS)}")
    return INITIALIZERS[name](tuple(shape), hidden_size, rng)
