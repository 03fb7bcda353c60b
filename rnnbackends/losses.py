"""Losses computed from logits, averaged over the valid (unmasked) entries; each returns (loss, dL/dlogits)."""
from __future__ import annotations

import math

from .layers import active_kernel, array_module


def _mask_weights(xp, mask, shape, dtype):
    """Weights (shape) that are 1/n on the n valid entries and 0 on padding."""
    if mask is None:
        return xp.full(shape, 1.0 / max(math.prod(shape), 1), dtype=dtype)
    weights = xp.asarray(mask).astype(dtype)
    weights /= max(float(weights.sum()), 1.0)
    return weights


def binary_cross_entropy(logits, targets, mask=None):
    """Mean of -[y log σ(z) + (1-y) log(1-σ(z))] over valid entries, computed stably from logits z (...)."""
    xp = array_module(logits)
    targets = xp.asarray(targets).astype(logits.dtype)
    weights = _mask_weights(xp, mask, logits.shape, logits.dtype)
    # -log σ(z) = softplus(-z); the stable form is max(z, 0) - z·y + log(1 + e^-|z|)
    per_entry = xp.maximum(logits, 0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
    probabilities = 1.0 / (1.0 + xp.exp(-logits))
    return float((per_entry * weights).sum()), (probabilities - targets) * weights


def softmax_cross_entropy(logits, targets, weights):
    """Σ_n w_n · -log softmax(z_n)[y_n] and its gradient w_n · (softmax(z_n) - onehot(y_n)), in one buffer.

    logits (N, K), integer targets (N,), weights (N,) in the logits' dtype -> (loss, d_logits (N, K)). Stable:
    each row is shifted by its maximum before the exponential; one (N, K) array is allocated, for the gradient.
    """
    xp = array_module(logits)
    rows = xp.arange(logits.shape[0])
    top = logits.max(axis=1)                                                # (N,)
    d_logits = xp.subtract(logits, top[:, None], dtype=logits.dtype)        # z - max z: the only (N, K) array
    picked = d_logits[rows, targets]                                        # z_y - max z
    xp.exp(d_logits, out=d_logits)
    total = d_logits.sum(axis=1)                                            # Σ e^(z - max z)
    loss = float(xp.dot(weights, xp.log(total) - picked))                   # -log p[y] = log Σ - (z_y - max)
    d_logits *= (weights / total)[:, None]                                  # w · softmax
    d_logits[rows, targets] -= weights                                      # - w · onehot(y)
    return loss, d_logits


def categorical_cross_entropy(logits, targets, mask=None):
    """Mean of -log softmax(z)[y] over valid entries: logits (..., K), integer targets (...).

    The forward and the gradient come from one fused pass (``softmax_cross_entropy``), or from the backend's kernel
    of that name within ``computing_on(backend)``.
    """
    xp = array_module(logits)
    targets = xp.asarray(targets)
    K = logits.shape[-1]
    weights = _mask_weights(xp, mask, targets.shape, logits.dtype).reshape(-1)      # (N,)
    fused = active_kernel("softmax_cross_entropy", xp) or softmax_cross_entropy
    loss, d_logits = fused(xp.ascontiguousarray(logits.reshape(-1, K)), xp.ascontiguousarray(targets.reshape(-1)),
                           weights)
    return loss, d_logits.reshape(logits.shape)


def mean_squared_error(predictions, targets, mask=None):
    """Mean of (ŷ - y)² over valid entries."""
    xp = array_module(predictions)
    targets = xp.asarray(targets).astype(predictions.dtype)
    weights = _mask_weights(xp, mask, predictions.shape, predictions.dtype)
    error = predictions - targets
    return float((error * error * weights).sum()), 2.0 * error * weights
