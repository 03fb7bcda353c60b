"""Chain backends: the host code around the sequential part, written once against ``xp``.

Every fast RNN backend does the same around its time loop: X_t·W_X for all steps is one GEMM; only the chain
over the states is sequential; each row's last valid state is a gather; after the backward chain, dW_X, dW_A,
db_A, db_R and dX are one GEMM or reduction each over all steps. A backend that subclasses ``ChainBackend``
writes only the chain, a forward and a backward method for each cell it serves (G gates, w_a (H, G·H)):

    rnn_forward_chain(z, a0, w_a, b_a, steps, nonlinearity) -> (a, chain_saved)
    rnn_backward_chain(d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved) -> (dz, d_a0)
    gru_forward_chain(z, a0, w_a, b_a, b_r, steps) -> (a, chain_saved)
    gru_backward_chain(d_a, d_a_n, a, a0, w_a, steps, chain_saved) -> (dz_x, dz_r, d_a0)
    lstm_forward_chain(z, a0, c0, w_a, b_a, b_r, steps) -> (a, c_n, chain_saved)
    lstm_backward_chain(d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, chain_saved) -> (dz_x, dz_r, d_a0, d_c0)

z (T, B, G·H) holds X_t·W_X on entry (no bias) and may be overwritten (a may be z itself); a (T, B, H) is
A_1..A_T with A_t = 0 for t >= steps[b], where the state stays frozen. The simple cell's b_a arrives with b_R
added. dz_x (T, B, G·H) is dL/d(X_t·W_X + b_A) and dz_r dL/d(A_{t-1}·W_A + b_R): they differ only in GRU's n
gate (return the same array twice otherwise); both are 0 on padding, where d_a is never read. chain_saved is
anything the backward chain needs. ``steps`` (B,) is a host int64 array (lengths, or T for every row); inputs
arrive validated and C-contiguous; d_a_n and d_c_n are always arrays. rnnbackends.reference holds the definition
of each chain in plain NumPy, and the conformance kit checks a chain backend's methods against it.
"""
from __future__ import annotations

import numpy as np


class ChainBackend:
    """``forward_sequence``/``backward_sequence`` of the contract around a subclass's chain methods."""

    xp = np

    def matmul(self, a, b, out=None):
        """a·b (into out if given): every GEMM around the chain goes through here, so a backend may split them
        across its own threads."""
        return a @ b if out is None else self.xp.matmul(a, b, out=out)

    def empty(self, shape, dtype):
        """An uninitialised array for the host code around the chain (a backend may align it)."""
        return self.xp.empty(shape, dtype=dtype)

    def forward_sequence(self, x, state0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh", cell="rnn",
                         b_r=None):
        """The cell's chain over t=1..T -> (a (T,B,H), state_n, saved); state is A (B,H), or (A, C) for LSTM."""
        xp = self.xp
        T, B, D = x.shape
        steps = np.full(B, T, dtype=np.int64) if lengths is None else lengths    # valid steps per row (B,)
        z = self.empty((T, B, w_x.shape[1]), x.dtype)                            # X_t·W_X (T, B, G·H)
        self.matmul(x.reshape(T * B, D), w_x, out=z.reshape(T * B, -1))          # all steps in one GEMM
        last = (xp.asarray(steps - 1), xp.arange(B))                             # each row's last valid step
        if cell != "rnn" and b_r is None:
            b_r = xp.zeros_like(b_a)                                             # b_R = 0 (G·H,)
        if cell == "rnn":
            bias = b_a if b_r is None else b_a + b_r                             # the simple cell's one bias
            a, chain_saved = self.rnn_forward_chain(z, state0, w_a, bias, steps, nonlinearity)
            state_n = a[last]                                                    # A_n (B, H)
        elif cell == "gru":
            a, chain_saved = self.gru_forward_chain(z, state0, w_a, b_a, b_r, steps)
            state_n = a[last]
        else:
            a, c_n, chain_saved = self.lstm_forward_chain(z, *state0, w_a, b_a, b_r, steps)
            state_n = (a[last], c_n)                                             # (A_n, C_n)
        return a, state_n, (cell, x, state0, w_x, w_a, a, steps, nonlinearity, chain_saved)

    def backward_sequence(self, saved, d_a, d_state_n=None):
        """BPTT -> (d_x (T,B,D), d_state0, d_w_x (D,G·H), d_w_a (H,G·H), d_b_a (G·H,), d_b_r (G·H,))."""
        xp = self.xp
        cell, x, state0, w_x, w_a, a, steps, nonlinearity, chain_saved = saved
        T, B, D = x.shape
        H, GH = w_a.shape                                                        # (H, G·H)
        zeros = xp.zeros((B, H), dtype=a.dtype)
        if cell == "rnn":
            dz, d_state0 = self.rnn_backward_chain(d_a, zeros if d_state_n is None else d_state_n, a, w_a, steps,
                                                   nonlinearity, chain_saved)
            dz_x = dz_r = dz
        elif cell == "gru":
            dz_x, dz_r, d_state0 = self.gru_backward_chain(d_a, zeros if d_state_n is None else d_state_n, a,
                                                           state0, w_a, steps, chain_saved)
        else:
            d_a_n, d_c_n = (zeros, zeros) if d_state_n is None else d_state_n
            dz_x, dz_r, d_a0, d_c0 = self.lstm_backward_chain(d_a, d_a_n, d_c_n, a, *state0, w_a, steps,
                                                              chain_saved)
            d_state0 = (d_a0, d_c0)
        a0 = state0[0] if cell == "lstm" else state0
        dz_x_all = dz_x.reshape(T * B, GH)                                       # dZ_X, all steps (T·B, G·H)
        d_w_x = self.matmul(x.reshape(T * B, D).T, dz_x_all)                     # Σ X_tᵀ·dZ_X: one GEMM
        d_b_a = dz_x_all.sum(axis=0)                                             # Σ dZ_X
        d_x = self.matmul(dz_x_all, w_x.T).reshape(T, B, D)                      # dZ_X·W_Xᵀ: one GEMM
        d_w_a = self.matmul(a[:-1].reshape((T - 1) * B, H).T,                   # Σ A_{t-1}ᵀ·dZ_R, t ≥ 2
                            dz_r[1:].reshape((T - 1) * B, GH))
        d_w_a += a0.T @ dz_r[0]                                                  # ... and t = 1 (no copy of a)
        d_b_r = d_b_a.copy() if dz_r is dz_x else dz_r.reshape(T * B, GH).sum(axis=0)   # Σ dZ_R
        return d_x, d_state0, d_w_x, d_w_a, d_b_a, d_b_r
