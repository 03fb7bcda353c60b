"""The NumPy reference: the lecture's simple RNN, the living definition of the backend contract.

Forward, for t = 1..T:      Z_t = X_t·W_X + A_{t-1}·W_A + b_A,   A_t = g(Z_t)
Backward (BPTT), t = T..1:  dZ_t = (dL/dA_t + dZ_{t+1}·W_Aᵀ) ⊙ g'(Z_t)
then, over all steps at once: dW_X = Σ X_tᵀ·dZ_t,  dW_A = Σ A_{t-1}ᵀ·dZ_t,  db_A = Σ dZ_t,
dX_t = dZ_t·W_Xᵀ,  dA_0 = dZ_1·W_Aᵀ.  Steps t ≥ lengths[b] of row b are padding: A_t = 0 there and
no gradient flows through them; dL/dA_n joins dL/dA at each row's last valid step.

The chain (the two loops) is written here in plain NumPy; the GEMMs around it are the shared host code of
rnnbackends.chain, which every chain backend (numba, cupy, yours) runs too.
"""
import numpy as np

from .arrays import valid_steps
from .chain import ChainBackend

# g and g' written in terms of the output A = g(Z), which is what backward keeps.
ACTIVATIONS = {
    "tanh": (np.tanh, lambda a: 1.0 - a * a),
    "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(a.dtype)),
}


def rnn_forward_chain(z, a0, w_a, b_a, steps, nonlinearity):
    """A_t = g(Z_t) with Z_t = z_t + A_{t-1}·W_A + b_A, 0 past each row's length -> (a (T,B,H), None)."""
    T, B, _ = z.shape
    g, _ = ACTIVATIONS[nonlinearity]
    valid = valid_steps(np, steps, T, B)[:, :, None]                # (T, B, 1)
    a = np.empty_like(z)                                            # A_1..A_T
    a_prev = a0                                                     # A_0 (B, H)
    for t in range(T):
        a[t] = np.where(valid[t], g(z[t] + a_prev @ w_a + b_a), 0)  # the sequential A-chain
        a_prev = a[t]
    return a, None


def rnn_backward_chain(d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved=None):
    """dZ_t = (dL/dA_t + [t = last]·dL/dA_n + dZ_{t+1}·W_Aᵀ) ⊙ g'(Z_t), 0 on padding -> (dz, dA_0)."""
    T, B, H = a.shape
    _, g_prime = ACTIVATIONS[nonlinearity]
    valid = valid_steps(np, steps, T, B)[:, :, None]                # (T, B, 1)
    d_a = np.where(valid, d_a, 0)                                   # padding carries no gradient
    d_a[steps - 1, np.arange(B)] += d_a_n                           # a_n is A at each row's last step
    dz = np.empty_like(a)                                           # dL/dZ_t (T, B, H)
    d_next = np.zeros((B, H), dtype=a.dtype)                        # dL/dA_t arriving from step t+1
    for t in reversed(range(T)):
        dz[t] = np.where(valid[t], (d_a[t] + d_next) * g_prime(a[t]), 0)
        d_next = dz[t] @ w_a.T                                      # the only sequential product
    return dz, d_next


class ReferenceBackend(ChainBackend):
    """Every contract rule spelled out in plain NumPy; the numpy plugin registers it."""

    name = "numpy"
    xp = np
    capabilities = frozenset({"tanh", "relu", "float32", "float64", "lengths"})

    @classmethod
    def availability(cls):
        """Always available."""
        return True, f"NumPy {np.__version__}"

    def rnn_forward_chain(self, z, a0, w_a, b_a, steps, nonlinearity):
        """The reference forward chain."""
        return rnn_forward_chain(z, a0, w_a, b_a, steps, nonlinearity)

    def rnn_backward_chain(self, d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved):
        """The reference backward chain."""
        return rnn_backward_chain(d_a, d_a_n, a, w_a, steps, nonlinearity)
