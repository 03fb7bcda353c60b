"""Losses computed from logits, averaged over the valid (unmasked) entries; each returns (loss, dL/dlogits)."""
from __future__ import annotations

from .layers import array_module


def _mask_weights(xp, mask, shape, dtype):
    """Weights (shape) that are 1/n on the n valid entries and 0 on padding."""
    weights = xp.ones(shape, dtype=dtype) if mask is None else xp.asarray(mask).astype(dtype)
    return weights / max(float(weights.sum()), 1.0)


def binary_cross_entropy(logits, targets, mask=None):
    """Mean of -[y log σ(z) + (1-y) log(1-σ(z))] over valid entries, computed stably from logits z (...)."""
    xp = array_module(logits)
    targets = xp.asarray(targets).astype(logits.dtype)
    weights = _mask_weights(xp, mask, logits.shape, logits.dtype)
    # -log σ(z) = softplus(-z); the stable form is max(z, 0) - z·y + log(1 + e^-|z|)
    per_entry = xp.maximum(logits, 0) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
    probabilities = 1.0 / (1.0 + xp.exp(-logits))
    return float((per_entry * weights).sum()), (probabilities - targets) * weights


def categorical_cross_entropy(logits, targets, mask=None):
    """Mean of -log softmax(z)[y] over valid entries: logits (..., K), integer targets (...)."""
    xp = array_module(logits)
    targets = xp.asarray(targets)
    weights = _mask_weights(xp, mask, targets.shape, logits.dtype)          # (...)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probabilities = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))     # (..., K)
    K = logits.shape[-1]
    rows, flat_targets = xp.arange(targets.size), targets.reshape(-1)
    picked = log_probabilities.reshape(-1, K)[rows, flat_targets].reshape(targets.shape)   # log p[y]
    d_logits = xp.ascontiguousarray(xp.exp(log_probabilities))                             # softmax - onehot(y)
    d_logits.reshape(-1, K)[rows, flat_targets] -= 1.0
    return float(-(picked * weights).sum()), d_logits * weights[..., None]


def mean_squared_error(predictions, targets, mask=None):
    """Mean of (ŷ - y)² over valid entries."""
    xp = array_module(predictions)
    targets = xp.asarray(targets).astype(predictions.dtype)
    weights = _mask_weights(xp, mask, predictions.shape, predictions.dtype)
    error = predictions - targets
    return float((error * error * weights).sum()), 2.0 * error * weights
