"""The NumPy reference: the lecture's simple RNN, the living definition of the backend contract.

Forward, for t = 1..T:      Z_t = X_t·W_X + A_{t-1}·W_A + b_A,   A_t = g(Z_t)
Backward (BPTT), t = T..1:  dZ_t = (dL/dA_t + dZ_{t+1}·W_Aᵀ) ⊙ g'(Z_t)
then, over all steps at once: dW_X = Σ X_tᵀ·dZ_t,  dW_A = Σ A_{t-1}ᵀ·dZ_t,  db_A = Σ dZ_t,
dX_t = dZ_t·W_Xᵀ,  dA_0 = dZ_1·W_Aᵀ.  Steps t ≥ lengths[b] of row b are padding: A_t = 0 there and
no gradient flows through them; dL/dA_n joins dL/dA at each row's last valid step.

The chain (the two loops) is written here in plain NumPy; the GEMMs around it are the shared host code of
rnnbackends.chain, which every chain backend (numba, cupy, yours) runs too. The gated cells' chains (GRU, LSTM,
PyTorch's equations and gate orders) follow, checked against torch.nn.GRU / nn.LSTM by the tests; they join the
backend contract as its version 2.
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


# -- The gated cells (PyTorch's gate orders and equations), chain parts in plain NumPy ----------------------------
# z (T, B, G·H) holds X_t·W_X for the G gates side by side; b_a is the input-side bias (PyTorch bias_ih), b_r the
# recurrent-side one (bias_hh). Past a row's length the state is frozen and a[t, b] is 0. Backward chains return
# dZ_X (T, B, G·H), the gradient of X_t·W_X + b_A, and dZ_R, that of A_{t-1}·W_A + b_R; they differ only in GRU's
# n gate, where the reset multiplies the recurrent product. Then dW_X = Σ X_tᵀ·dZ_X, db_A = Σ dZ_X,
# dX_t = dZ_X·W_Xᵀ, dW_A = Σ A_{t-1}ᵀ·dZ_R, db_R = Σ dZ_R.

def sigmoid(z):
    """σ(z) = 1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def gru_forward_chain(z, a0, w_a, b_a, b_r, steps):
    """r, u = σ(·), n = tanh(Z_Xn + r ⊙ (A_{t-1}·W_An + b_Rn)), A_t = (1 − u) ⊙ n + u ⊙ A_{t-1} -> (a, saved)."""
    T, B, G = z.shape
    H = G // 3
    valid = valid_steps(np, steps, T, B)[:, :, None]                 # (T, B, 1)
    a = np.zeros((T, B, H), dtype=z.dtype)                            # A_1..A_T, 0 on padding
    r, u, n, z_rn = (np.zeros((T, B, H), dtype=z.dtype) for _ in range(4))
    a_prev = a0
    for t in range(T):
        z_x = z[t] + b_a                                              # X_t·W_X + b_A (B, 3H)
        z_r = a_prev @ w_a + b_r                                      # A_{t-1}·W_A + b_R (B, 3H)
        r[t] = sigmoid(z_x[:, :H] + z_r[:, :H])
        u[t] = sigmoid(z_x[:, H:2 * H] + z_r[:, H:2 * H])
        z_rn[t] = z_r[:, 2 * H:]
        n[t] = np.tanh(z_x[:, 2 * H:] + r[t] * z_rn[t])
        a_new = (1 - u[t]) * n[t] + u[t] * a_prev
        a[t] = np.where(valid[t], a_new, 0)
        a_prev = np.where(valid[t], a_new, a_prev)                    # frozen past the row's length
    return a, (r, u, n, z_rn)


def gru_backward_chain(d_a, d_a_n, a, a0, w_a, steps, saved):
    """BPTT through the GRU chain -> (dZ_X (T,B,3H), dZ_R (T,B,3H), dA_0 (B,H))."""
    r, u, n, z_rn = saved
    T, B, H = a.shape
    valid = valid_steps(np, steps, T, B)[:, :, None]
    d_a = np.where(valid, d_a, 0)
    d_a[steps - 1, np.arange(B)] += d_a_n                              # A_n is A at each row's last step
    dz_x, dz_r = np.zeros((T, B, 3 * H), dtype=a.dtype), np.zeros((T, B, 3 * H), dtype=a.dtype)
    carry = np.zeros((B, H), dtype=a.dtype)                           # dL/dA_t arriving from step t+1
    for t in reversed(range(T)):
        a_prev = a[t - 1] if t else a0
        g = d_a[t] + carry
        dn = g * (1 - u[t]) * (1 - n[t] ** 2)                         # through tanh
        du = g * (a_prev - n[t]) * u[t] * (1 - u[t])
        dr = dn * z_rn[t] * r[t] * (1 - r[t])
        dz_x[t] = np.where(valid[t], np.concatenate([dr, du, dn], axis=1), 0)
        dz_r[t] = np.where(valid[t], np.concatenate([dr, du, dn * r[t]], axis=1), 0)
        carry = np.where(valid[t], g * u[t] + dz_r[t] @ w_a.T, 0)
    return dz_x, dz_r, carry


def lstm_forward_chain(z, a0, c0, w_a, b_a, b_r, steps):
    """i, f, o = σ(·), g = tanh(·); C_t = f ⊙ C_{t-1} + i ⊙ g, A_t = o ⊙ tanh(C_t) -> (a, c_n, saved)."""
    T, B, G = z.shape
    H = G // 4
    valid = valid_steps(np, steps, T, B)[:, :, None]
    a = np.zeros((T, B, H), dtype=z.dtype)
    gates = np.zeros((T, B, 4 * H), dtype=z.dtype)                   # i, f, g, o after their nonlinearities
    c = np.zeros((T, B, H), dtype=z.dtype)                            # C_1..C_T (frozen past the length)
    a_prev, c_prev = a0, c0
    for t in range(T):
        pre = z[t] + b_a + a_prev @ w_a + b_r                         # (B, 4H)
        i, f = sigmoid(pre[:, :H]), sigmoid(pre[:, H:2 * H])
        g, o = np.tanh(pre[:, 2 * H:3 * H]), sigmoid(pre[:, 3 * H:])
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        c_new = f * c_prev + i * g
        a_new = o * np.tanh(c_new)
        a[t] = np.where(valid[t], a_new, 0)
        a_prev, c_prev = np.where(valid[t], a_new, a_prev), np.where(valid[t], c_new, c_prev)
        c[t] = c_prev
    return a, c_prev, (gates, c)


def lstm_backward_chain(d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, saved):
    """BPTT through the LSTM chain -> (dZ (T,B,4H), the same dZ for the recurrent side, dA_0, dC_0)."""
    gates, c = saved
    T, B, H = a.shape
    valid = valid_steps(np, steps, T, B)[:, :, None]
    last = np.arange(T)[:, None] == (steps - 1)[None, :]             # (T, B): each row's last valid step
    d_a = np.where(valid, d_a, 0)
    d_a[steps - 1, np.arange(B)] += d_a_n
    dz = np.zeros((T, B, 4 * H), dtype=a.dtype)
    carry_a, carry_c = np.zeros((B, H), dtype=a.dtype), np.zeros((B, H), dtype=a.dtype)
    for t in reversed(range(T)):
        i, f, g, o = (gates[t][:, k * H:(k + 1) * H] for k in range(4))
        c_prev = c[t - 1] if t else c0
        tanh_c = np.tanh(c[t])
        g_a = d_a[t] + carry_a
        g_c = g_a * o * (1 - tanh_c ** 2) + carry_c + np.where(last[t][:, None], d_c_n, 0)
        dz_t = np.concatenate([g_c * g * i * (1 - i), g_c * c_prev * f * (1 - f), g_c * i * (1 - g ** 2),
                               g_a * tanh_c * o * (1 - o)], axis=1)
        dz[t] = np.where(valid[t], dz_t, 0)
        carry_a = np.where(valid[t], dz[t] @ w_a.T, 0)
        carry_c = np.where(valid[t], g_c * f, 0)
    return dz, dz, carry_a, carry_c


class ReferenceBackend(ChainBackend):
    """Every contract rule spelled out in plain NumPy; the numpy plugin registers it."""

    name = "numpy"
    xp = np
    capabilities = frozenset({"rnn", "gru", "lstm", "tanh", "relu", "float32", "float64", "lengths"})

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

    def gru_forward_chain(self, z, a0, w_a, b_a, b_r, steps):
        """The reference GRU chain."""
        return gru_forward_chain(z, a0, w_a, b_a, b_r, steps)

    def gru_backward_chain(self, d_a, d_a_n, a, a0, w_a, steps, chain_saved):
        """The reference GRU backward chain."""
        return gru_backward_chain(d_a, d_a_n, a, a0, w_a, steps, chain_saved)

    def lstm_forward_chain(self, z, a0, c0, w_a, b_a, b_r, steps):
        """The reference LSTM chain."""
        return lstm_forward_chain(z, a0, c0, w_a, b_a, b_r, steps)

    def lstm_backward_chain(self, d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, chain_saved):
        """The reference LSTM backward chain."""
        return lstm_backward_chain(d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, chain_saved)
