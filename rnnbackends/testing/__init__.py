"""The conformance kit: ``RNNBACKENDS_TEST_BACKEND=NAME python -m pytest --pyargs rnnbackends.testing``.

Checks a backend against the NumPy reference (rnnbackends.reference). Without the variable it checks every
registered backend; a backend that fails to load fails the run, one unavailable here is skipped with
its reason. Helpers for writing further checks live here too.
"""
from __future__ import annotations

import numpy as np

from ..arrays import to_host

__all__ = ["GATES", "make_case", "make_cell_case", "reference", "to_host", "tolerance"]

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def reference():
    """The NumPy reference backend instance (the definition the kit compares against)."""
    from ..reference import ReferenceBackend

    return ReferenceBackend()


def tolerance(dtype) -> float:
    """Relative tolerance against the reference: 1e-9 in float64, 2e-4 in float32."""
    return 1e-9 if np.dtype(dtype) == np.float64 else 2e-4


def make_case(T, B, D, H, dtype="float64", *, lengths=None, seed=0, scale=None):
    """Random inputs (x, a0, w_x, w_a, b_a) of the given shapes, weights uniform ±1/√H."""
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(H) if scale is None else scale
    x = rng.standard_normal((T, B, D))
    a0 = rng.uniform(-0.5, 0.5, (B, H))
    w_x = rng.uniform(-bound, bound, (D, H))
    w_a = rng.uniform(-bound, bound, (H, H))
    b_a = rng.uniform(-bound, bound, (H,))
    arrays = tuple(np.ascontiguousarray(v, dtype=dtype) for v in (x, a0, w_x, w_a, b_a))
    return arrays, (None if lengths is None else np.asarray(lengths, dtype=np.int64))


def make_cell_case(cell, T, B, D, H, dtype="float64", *, lengths=None, seed=0):
    """Random inputs of one cell: ({x, a0[, c0], w_x (D,G·H), w_a (H,G·H), b_a, b_r}, lengths), uniform ±1/√H."""
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(H)
    arrays = {"x": rng.standard_normal((T, B, D)), "a0": rng.uniform(-0.5, 0.5, (B, H))}
    if cell == "lstm":
        arrays["c0"] = rng.uniform(-0.5, 0.5, (B, H))
    arrays.update(w_x=rng.uniform(-bound, bound, (D, G * H)), w_a=rng.uniform(-bound, bound, (H, G * H)),
                  b_a=rng.uniform(-bound, bound, G * H), b_r=rng.uniform(-bound, bound, G * H))
    arrays = {k: np.ascontiguousarray(v, dtype=dtype) for k, v in arrays.items()}
    return arrays, (None if lengths is None else np.asarray(lengths, dtype=np.int64))


def cell_call(arrays):
    """(positional arguments, b_r) of forward_sequence for a make_cell_case dict: the state is a pair for LSTM."""
    state0 = (arrays["a0"], arrays["c0"]) if "c0" in arrays else arrays["a0"]
    return (arrays["x"], state0, arrays["w_x"], arrays["w_a"], arrays["b_a"]), arrays["b_r"]
