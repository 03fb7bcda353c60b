"""The numba backend's optional front-end kernels (rnnbackends.layers.FRONTEND_CAPABILITIES): one pass each.

``softmax_cross_entropy``: each row's maximum, exponentials, sum, loss term and gradient while the row is in cache
(NumPy makes six passes over the (N, K) logits). ``embedding_backward``: dL/dweight by adding each position's row
into its word's row in order (NumPy sorts the ids first). ``adam_update``: m, v and the parameter in one loop
over the elements (NumPy makes ten passes through a scratch array). The wrappers check what the kernels index.
The softmax's exponentials use the Cephes exp of kernels.py (2^n·e^r, vectorisable, the shift makes every argument
≤ 0), so this file's cached kernels must be recompiled when that code changes (numba checks only this file).
"""
import math

import numpy as np

from rnnbackends import optimizers

from .kernels import (
    EXP_P,
    EXP_Q,
    EXPF_P,
    LN2_HI,
    LN2_LO,
    LN2F_HI,
    LN2F_LO,
    LOG2E,
    LOG2EF,
    _overload_by_dtype,
    _pow2_f32,
    _pow2_f64,
    serial,
)

_S, _D = np.float32, np.float64


def _exp_nonpositive_f32(x):
    """e^x of a float32 x ≤ 0, within a few ulp of np.exp above e^-87 (flushed to e^-87 below), branch-free."""
    y = max(x, _S(-87.0))
    n = np.floor(y * LOG2EF + _S(0.5))
    r = (y - n * LN2F_HI) - n * LN2F_LO
    poly = (((((EXPF_P[0] * r + EXPF_P[1]) * r + EXPF_P[2]) * r + EXPF_P[3]) * r + EXPF_P[4]) * r + EXPF_P[5])
    return (r * r * poly + r + _S(1.0)) * _pow2_f32(np.int32(n))


def _exp_nonpositive_f64(x):
    """e^x of a float64 x ≤ 0, within a few ulp of np.exp above e^-708 (flushed to e^-708 below), branch-free."""
    y = max(x, _D(-708.0))
    n = np.floor(y * LOG2E + _D(0.5))
    r = (y - n * LN2_HI) - n * LN2_LO
    rr = r * r
    p = r * ((EXP_P[0] * rr + EXP_P[1]) * rr + EXP_P[2])
    q = ((EXP_Q[0] * rr + EXP_Q[1]) * rr + EXP_Q[2]) * rr + EXP_Q[3]
    return (q + p) / (q - p) * _pow2_f64(np.int64(n))                       # e^r = (q + p)/(q − p)


def exp_nonpositive(x):
    """Vectorisable e^x for x ≤ 0 in njit code; np.exp under NUMBA_DISABLE_JIT=1."""
    return np.exp(x)


_overload_by_dtype(exp_nonpositive, _exp_nonpositive_f32, _exp_nonpositive_f64)


@serial
def _softmax_cross_entropy(logits, targets, weights, d_logits):
    """d_logits (N, K) = w·(softmax(z) - onehot(y)) row by row; returns Σ_n w_n·-log softmax(z_n)[y_n]."""
    N, K = logits.shape
    loss = 0.0
    for n in range(N):
        w = weights[n]
        if w == 0.0:                                                # padding: no loss, no gradient
            d_logits[n, :] = 0.0
            continue
        top = logits[n, 0]
        for k in range(1, K):
            top = max(top, logits[n, k])
        total = logits.dtype.type(0.0)
        for k in range(K):
            e = exp_nonpositive(logits[n, k] - top)
            d_logits[n, k] = e
            total += e
        y = targets[n]
        loss += w * (math.log(total) - (logits[n, y] - top))
        scale = w / total
        for k in range(K):
            d_logits[n, k] *= scale
        d_logits[n, y] -= w
    return loss


@serial
def _embedding_backward(ids, d_rows, grad):
    """grad[ids[n]] += d_rows[n] for n in order (grad zeroed by the caller)."""
    N, D = d_rows.shape
    for n in range(N):
        v = ids[n]
        for j in range(D):
            grad[v, j] += d_rows[n, j]


@serial
def _adam_update(param, grad, m, v, lr_t, beta1, beta2, eps_t, scale, decay):
    """One Adam step over flat arrays, g = scale·grad (see rnnbackends.optimizers.adam_update)."""
    for i in range(param.size):
        g = grad[i] * scale
        m[i] = beta1 * m[i] + (1.0 - beta1) * g
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g
        param[i] = decay * param[i] - lr_t * m[i] / (math.sqrt(v[i]) + eps_t)


def _check_ids(name, ids, size):
    """An IndexError like NumPy's for an id outside [0, size): the kernels do not check bounds."""
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise IndexError(f"{name} {bad} is out of bounds for size {size}")


def softmax_cross_entropy(logits, targets, weights):
    """logits (N, K), integer targets (N,), weights (N,) -> (Σ w·-log softmax[y], d_logits (N, K))."""
    _check_ids("target", targets, logits.shape[1])
    d_logits = np.empty_like(logits)
    loss = _softmax_cross_entropy(logits, targets, weights.astype(logits.dtype, copy=False), d_logits)
    return float(loss), d_logits


def embedding_backward(ids, d_rows, vocab_size, padding_idx=None):
    """ids (N,) int, d_rows (N, D) -> dL/dweight (V, D), the padding row zero."""
    _check_ids("id", ids, vocab_size)
    grad = np.zeros((vocab_size, d_rows.shape[1]), dtype=d_rows.dtype)
    _embedding_backward(ids, d_rows, grad)
    if padding_idx is not None:
        grad[padding_idx] = 0.0
    return grad


def adam_update(param, grad, m, v, scratch, lr_t, beta1, beta2, eps_t, scale, decay):
    """One Adam step in place; the front-end's update where param, m or v is not C-contiguous (a view)."""
    if not all(a.flags.c_contiguous for a in (param, m, v)):
        return optimizers.adam_update(param, grad, m, v, scratch, lr_t, beta1, beta2, eps_t, scale, decay)
    _adam_update(param.reshape(-1), np.ascontiguousarray(grad).reshape(-1), m.reshape(-1), v.reshape(-1), lr_t,
                 beta1, beta2, eps_t, scale, decay)
