"""The reference backend: the lecture's simple RNN in NumPy, the living definition of the contract.

Forward, for t = 1..T:      Z_t = X_t·W_X + A_{t-1}·W_A + b_A,   A_t = g(Z_t)
Backward (BPTT), t = T..1:  dZ_t = (dL/dA_t + dZ_{t+1}·W_Aᵀ) ⊙ g'(Z_t)
then, over all steps at once: dW_X = Σ X_tᵀ·dZ_t,  dW_A = Σ A_{t-1}ᵀ·dZ_t,  db_A = Σ dZ_t,
dX_t = dZ_t·W_Xᵀ,  dA_0 = dZ_1·W_Aᵀ.  Steps t ≥ lengths[b] of row b are padding: A_t = 0 there and
no gradient flows through them.
"""
import numpy as np

# g and g' written in terms of the output A = g(Z), which is what backward keeps.
ACTIVATIONS = {
    "tanh": (np.tanh, lambda a: 1.0 - a * a),
    "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(a.dtype)),
}


def valid_steps(lengths, T, B):
    """(T, B, 1) bool: True where step t is inside row b's sequence (t < lengths[b])."""
    if lengths is None:
        return np.ones((T, B, 1), dtype=bool)
    return (np.arange(T)[:, None] < lengths[None, :])[:, :, None]


class NumpyBackend:
    """The reference: every contract rule spelled out in plain NumPy."""

    name = "numpy"
    xp = np
    capabilities = frozenset({"tanh", "relu", "float32", "float64", "lengths"})

    @classmethod
    def availability(cls):
        """Always available."""
        return True, f"NumPy {np.__version__}"

    def forward_sequence(self, x, a0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh"):
        """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) -> (a (T,B,H), a_n (B,H), saved)."""
        T, B, D = x.shape
        H = w_a.shape[0]
        g, _ = ACTIVATIONS[nonlinearity]
        valid = valid_steps(lengths, T, B)                          # (T, B, 1)
        z_x = (x.reshape(T * B, D) @ w_x).reshape(T, B, H) + b_a    # X_t·W_X + b_A, all steps in one GEMM
        a = np.empty((T, B, H), dtype=x.dtype)                      # A_1..A_T
        a_prev = a0                                                 # A_0 (B, H)
        for t in range(T):
            a[t] = np.where(valid[t], g(z_x[t] + a_prev @ w_a), 0)  # the sequential A-chain
            a_prev = a[t]
        last = np.full(B, T - 1) if lengths is None else lengths - 1
        a_n = a[last, np.arange(B)]                                 # each row's last valid state (B, H)
        return a, a_n, (x, a0, w_x, w_a, a, valid, last, nonlinearity)

    def backward_sequence(self, saved, d_a, d_a_n=None):
        """BPTT -> (d_x (T,B,D), d_a0 (B,H), d_w_x (D,H), d_w_a (H,H), d_b_a (H,))."""
        x, a0, w_x, w_a, a, valid, last, nonlinearity = saved
        T, B, D = x.shape
        H = w_a.shape[0]
        _, g_prime = ACTIVATIONS[nonlinearity]
        d_a = np.where(valid, d_a, 0)                               # padding carries no gradient
        if d_a_n is not None:
            d_a[last, np.arange(B)] += d_a_n                        # a_n is A at each row's last step
        dz = np.empty_like(a)                                       # dL/dZ_t (T, B, H)
        d_next = np.zeros((B, H), dtype=a.dtype)                    # dL/dA_t arriving from step t+1
        for t in reversed(range(T)):
            dz[t] = np.where(valid[t], (d_a[t] + d_next) * g_prime(a[t]), 0)
            d_next = dz[t] @ w_a.T                                  # the only sequential product
        a_prev = np.concatenate([a0[None], a[:-1]])                 # A_0..A_{T-1} (T, B, H)
        dz2 = dz.reshape(T * B, H)
        d_w_x = x.reshape(T * B, D).T @ dz2                         # one GEMM over all steps
        d_w_a = a_prev.reshape(T * B, H).T @ dz2                    # one GEMM over all steps
        d_b_a = dz2.sum(axis=0)
        d_x = (dz2 @ w_x.T).reshape(T, B, D)                        # one GEMM over all steps
        return d_x, d_next, d_w_x, d_w_a, d_b_a
