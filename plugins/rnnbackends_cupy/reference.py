"""CPU references of each CUDA kernel (NumPy), the definitions tests/test_cupy_emulator.py checks against."""
import numpy as np


def _g(z, relu):
    return np.maximum(z, 0) if relu else np.tanh(z)


def _g_prime(a, relu):
    return (a > 0).astype(a.dtype) if relu else 1 - a * a


def forward_step_reference(zx_t, r, lengths, t, relu):
    """step.cu rnn_forward_step: A_t = g(ZX_t + R) where t < lengths[b], else 0 -> (B, H)."""
    return np.where((t < lengths)[:, None], _g(zx_t + r, relu), 0).astype(zx_t.dtype)


def backward_step_reference(d_a_t, d_a_n, a_t, d_next, lengths, t, relu):
    """step.cu rnn_backward_step: dZ_t = (dA_t + [t = len-1]·dA_n + D)·g'(A_t) where t < lengths[b] -> (B, H)."""
    valid, last = (t < lengths)[:, None], (t == lengths - 1)[:, None]
    g = np.where(valid, d_a_t, 0) + np.where(last, d_a_n, 0)
    return np.where(valid, (g + d_next) * _g_prime(a_t, relu), 0).astype(a_t.dtype)


def forward_persistent_reference(zx, a0, w_a, lengths, relu):
    """persistent.cu rnn_forward_persistent: the whole forward A-chain -> a (T, B, H)."""
    a = np.empty_like(zx)
    prev = a0
    for t in range(zx.shape[0]):
        a[t] = forward_step_reference(zx[t], prev @ w_a, lengths, t, relu)
        prev = a[t]
    return a


def backward_persistent_reference(d_a, d_a_n, a, w_a, lengths, relu):
    """persistent.cu rnn_backward_persistent: the whole backward A-chain -> (dz (T, B, H), d_a0 (B, H))."""
    dz = np.empty_like(a)
    d_next = np.zeros_like(d_a_n)
    for t in reversed(range(a.shape[0])):
        dz[t] = backward_step_reference(d_a[t], d_a_n, a[t], d_next, lengths, t, relu)
        d_next = dz[t] @ w_a.T
    return dz, d_next
