"""Finite-difference gradient checks for backends and front-end layers alike."""
from __future__ import annotations

import numpy as np

from .arrays import to_host


def numerical_gradient(loss_fn, array, index, eps=1e-6) -> float:
    """Central difference d loss / d array[index]; ``array`` is perturbed in place and restored."""
    original = array[index].item()
    array[index] = original + eps
    plus = float(loss_fn())
    array[index] = original - eps
    minus = float(loss_fn())
    array[index] = original
    return (plus - minus) / (2 * eps)


def check_gradients(loss_fn, params, grads, *, eps=1e-6, rtol=1e-5, atol=1e-8, max_checks=40, seed=0):
    """Compare analytic ``grads[name]`` with central differences of the scalar ``loss_fn()``.

    ``params`` maps names to float64 arrays that ``loss_fn`` reads (they are perturbed in place and
    restored); ``grads`` maps the same names to the analytic gradients. Up to ``max_checks`` entries
    per array are checked (all of them when the array is smaller). Raises AssertionError naming the
    worst entry; returns the largest relative error seen.
    """
    rng = np.random.default_rng(seed)
    worst = 0.0
    for name, array in params.items():
        if array.dtype != np.float64:
            raise TypeError(f"{name}: gradient checks need float64 arrays, got {array.dtype}")
        grad = to_host(grads[name])
        if grad.shape != tuple(array.shape):
            raise AssertionError(f"{name}: gradient has shape {grad.shape}, parameter has {tuple(array.shape)}")
        size = int(np.prod(array.shape))
        flat = np.arange(size) if size <= max_checks else rng.choice(size, max_checks, replace=False)
        for k in flat:
            index = np.unravel_index(int(k), array.shape)
            numeric = numerical_gradient(loss_fn, array, index, eps)
            analytic = float(grad[index])
            err = abs(numeric - analytic)
            if err > atol + rtol * max(abs(numeric), abs(analytic)):
                raise AssertionError(f"{name}{list(index)}: analytic gradient {analytic!r} but finite "
                                     f"difference {numeric!r} (|diff| {err:.3g}, rtol {rtol}, atol {atol})")
            worst = max(worst, err / max(abs(numeric), abs(analytic), atol))
    return worst
