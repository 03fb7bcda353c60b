"""Chain backends: the host code around the sequential part, written once against ``xp``.

Every fast RNN backend does the same around its time loop: X_t·W_X for all steps is one GEMM; only the chain
A_t = g(Z_t), Z_t = X_t·W_X + A_{t-1}·W_A + b_A, is sequential; each row's last valid state is a gather; after
the backward chain, dW_X, dW_A, db_A and dX are one GEMM or reduction each over all steps. A backend that
subclasses ``ChainBackend`` writes only the chain, for each cell it serves:

    rnn_forward_chain(z, a0, w_a, b_a, steps, nonlinearity) -> (a, chain_saved)
        z (T, B, H) holds X_t·W_X on entry and may be overwritten (a may be z itself); a (T, B, H) is
        A_1..A_T with A_t = 0 for t >= steps[b]; chain_saved is anything its backward chain needs.
    rnn_backward_chain(d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved) -> (dz, d_a0)
        dz (T, B, H) = dL/dZ_t (0 on padding; d_a is never read there), d_a0 (B, H) = dL/dA_0;
        d_a_n (B, H) is dL/dA at each row's last valid step.

``steps`` (B,) is a host int64 array (lengths, or T for every row); inputs arrive validated and C-contiguous.
"""
from __future__ import annotations

import numpy as np


class ChainBackend:
    """``forward_sequence``/``backward_sequence`` of the contract around a subclass's chain methods."""

    xp = np

    def forward_sequence(self, x, a0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh"):
        """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) -> (a (T,B,H), a_n (B,H), saved)."""
        xp = self.xp
        T, B, D = x.shape
        H = w_a.shape[0]
        steps = np.full(B, T, dtype=np.int64) if lengths is None else lengths    # valid steps per row (B,)
        z = xp.empty((T, B, H), dtype=x.dtype)                                   # X_t·W_X (T, B, H)
        xp.matmul(x.reshape(T * B, D), w_x, out=z.reshape(T * B, H))             # all steps in one GEMM
        a, chain_saved = self.rnn_forward_chain(z, a0, w_a, b_a, steps, nonlinearity)
        a_n = a[xp.asarray(steps - 1), xp.arange(B)]                             # last valid state (B, H)
        return a, a_n, (x, a0, w_x, w_a, a, steps, nonlinearity, chain_saved)

    def backward_sequence(self, saved, d_a, d_a_n=None):
        """BPTT -> (d_x (T,B,D), d_a0 (B,H), d_w_x (D,H), d_w_a (H,H), d_b_a (H,))."""
        xp = self.xp
        x, a0, w_x, w_a, a, steps, nonlinearity, chain_saved = saved
        T, B, D = x.shape
        H = w_a.shape[0]
        if d_a_n is None:
            d_a_n = xp.zeros((B, H), dtype=a.dtype)
        dz, d_a0 = self.rnn_backward_chain(d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved)
        dz_all = dz.reshape(T * B, H)                                            # dZ_t, all steps (T·B, H)
        d_w_x = x.reshape(T * B, D).T @ dz_all                                   # Σ X_tᵀ·dZ_t: one GEMM
        d_w_a = a[:-1].reshape((T - 1) * B, H).T @ dz[1:].reshape((T - 1) * B, H)  # Σ A_{t-1}ᵀ·dZ_t, t ≥ 2 ...
        d_w_a += a0.T @ dz[0]                                                    # ... and t = 1 (no copy of a)
        d_b_a = dz_all.sum(axis=0)                                               # Σ dZ_t
        d_x = (dz_all @ w_x.T).reshape(T, B, D)                                  # dZ_t·W_Xᵀ: one GEMM
        return d_x, d_a0, d_w_x, d_w_a, d_b_a
