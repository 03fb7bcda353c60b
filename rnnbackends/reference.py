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
# recurrent-side one (bias_hh). Past a row's length a[t, b] is 0 and the final state is the last valid step's (the
# row runs on from zeros there, read by nothing). Backward chains return dZ_X (T, B, G·H), the gradient of
# X_t·W_X + b_A, and dZ_R, that of A_{t-1}·W_A + b_R; they differ only in GRU's n gate, where the reset multiplies
# the recurrent product. Then dW_X = Σ X_tᵀ·dZ_X, db_A = Σ dZ_X, dX_t = dZ_X·W_Xᵀ, dW_A = Σ A_{t-1}ᵀ·dZ_R,
# db_R = Σ dZ_R.
# Only the products with W_A and what depends on them are sequential: biases and the local derivatives of the gates
# are computed for all steps at once, and each step works in place (out=) on rows of preallocated arrays. Through
# padding the state counts as frozen (A_n is the last valid step's), so its gradient passes through unchanged: the
# carries start at dL/dA_n (and dL/dC_n) and are kept where a step is padding.

def sigmoid_in_place(z):
    """z <- σ(z) = 1 / (1 + e^-z), without temporaries."""
    z *= -1.0                                         # -z, in place
    np.exp(z, out=z)
    z += 1.0
    np.reciprocal(z, out=z)


def padding_steps(steps, T, B):
    """(T, B, 1) bool, True on padding (t >= lengths[b]); None when every row has all T steps."""
    return None if bool((steps == T).all()) else ~valid_steps(np, steps, T, B)[:, :, None]


def gru_forward_chain(z, a0, w_a, b_a, b_r, steps):
    """r, u = σ(·), n = tanh(Z_Xn + r ⊙ (A_{t-1}·W_An + b_Rn)), A_t = (1 − u) ⊙ n + u ⊙ A_{t-1} -> (a, saved)."""
    T, B, G = z.shape
    H = G // 3
    padding = padding_steps(steps, T, B)                              # (T, B, 1) or None
    gates = z                                                         # becomes r, u, n step by step (T, B, 3H)
    gates += b_a                                                      # X_t·W_X + b_A, all steps at once
    gates[:, :, :2 * H] += b_r[:2 * H]                                # r and u add the recurrent side whole
    a = np.empty((T, B, H), dtype=z.dtype)                            # A_1..A_T, 0 on padding
    z_rn = np.empty((T, B, H), dtype=z.dtype)                         # A_{t-1}·W_An + b_Rn, kept for backward
    z_r = np.empty((B, G), dtype=z.dtype)                             # A_{t-1}·W_A of one step
    reset = np.empty((B, H), dtype=z.dtype)
    a_prev = a0
    for t in range(T):
        r_u, n = gates[t, :, :2 * H], gates[t, :, 2 * H:]
        np.matmul(a_prev, w_a, out=z_r)
        r_u += z_r[:, :2 * H]
        sigmoid_in_place(r_u)                                         # r, u
        r, u = r_u[:, :H], r_u[:, H:]
        np.add(z_r[:, 2 * H:], b_r[2 * H:], out=z_rn[t])
        n += np.multiply(r, z_rn[t], out=reset)                       # Z_Xn + r ⊙ (A_{t-1}·W_An + b_Rn)
        np.tanh(n, out=n)                                             # n
        np.subtract(a_prev, n, out=a[t])                              # A_t = n + u ⊙ (A_{t-1} − n)
        a[t] *= u
        a[t] += n
        if padding is not None:                                       # A_t = 0 past the row's length
            np.copyto(a[t], 0, where=padding[t])
        a_prev = a[t]
    return a, (gates, z_rn)


def gru_backward_chain(d_a, d_a_n, a, a0, w_a, steps, saved):
    """BPTT through the GRU chain -> (dZ_X (T,B,3H), dZ_R (T,B,3H), dA_0 (B,H))."""
    gates, z_rn = saved
    T, B, H = a.shape
    padding = padding_steps(steps, T, B)
    r, u, n = gates[:, :, :H], gates[:, :, H:2 * H], gates[:, :, 2 * H:]
    one_minus_u = 1 - u
    dn_factor = n * n                                                 # ∂A_t/∂Z_n = (1 − u) ⊙ (1 − n²)
    np.subtract(1, dn_factor, out=dn_factor)
    dn_factor *= one_minus_u
    du_factor = np.empty_like(n)                                      # ∂A_t/∂Z_u = (A_{t-1} − n) ⊙ u ⊙ (1 − u)
    np.subtract(a[:-1], n[1:], out=du_factor[1:])
    np.subtract(a0, n[0], out=du_factor[0])
    du_factor *= u
    du_factor *= one_minus_u
    dr_factor = 1 - r                                                 # ∂Z_n/∂Z_r = (A_{t-1}·W_An + b_Rn) ⊙ σ'(r)
    dr_factor *= r
    dr_factor *= z_rn
    dz_x, dz_r = np.empty((T, B, 3 * H), dtype=a.dtype), np.empty((T, B, 3 * H), dtype=a.dtype)
    carry = np.array(d_a_n)                                           # dL/dA_t arriving from step t+1 (or A_n)
    g, through_w_a = np.empty((B, H), dtype=a.dtype), np.empty((B, H), dtype=a.dtype)
    valid = None if padding is None else ~padding
    for t in reversed(range(T)):
        dr, du, dn_r = dz_r[t, :, :H], dz_r[t, :, H:2 * H], dz_r[t, :, 2 * H:]
        dn = dz_x[t, :, 2 * H:]
        np.add(d_a[t], carry, out=g)                                  # dL/dA_t
        np.multiply(g, dn_factor[t], out=dn)
        np.multiply(g, du_factor[t], out=du)
        np.multiply(dn, dr_factor[t], out=dr)
        np.multiply(dn, r[t], out=dn_r)                               # the reset multiplies the recurrent product
        if padding is not None:                                       # no gradient on padding
            np.copyto(dz_r[t], 0, where=padding[t])
            np.copyto(dn, 0, where=padding[t])
        np.matmul(dz_r[t], w_a.T, out=through_w_a)                    # dL/dA_{t-1} = g ⊙ u + dZ_R·W_Aᵀ
        if padding is None:
            np.multiply(g, u[t], out=carry)
            carry += through_w_a
        else:                                                         # ... where step t is valid; else it passes
            g *= u[t]
            g += through_w_a
            np.copyto(carry, g, where=valid[t])
    dz_x[:, :, :2 * H] = dz_r[:, :, :2 * H]                           # r and u: the same on both sides
    return dz_x, dz_r, carry


def lstm_forward_chain(z, a0, c0, w_a, b_a, b_r, steps):
    """i, f, o = σ(·), g = tanh(·); C_t = f ⊙ C_{t-1} + i ⊙ g, A_t = o ⊙ tanh(C_t) -> (a, c_n, saved)."""
    T, B, G = z.shape
    H = G // 4
    padding = padding_steps(steps, T, B)
    gates = z                                                         # becomes i, f, g, o step by step (T, B, 4H)
    gates += b_a + b_r                                                # X_t·W_X + b_A + b_R, all steps at once
    a = np.empty((T, B, H), dtype=z.dtype)                            # A_1..A_T, 0 on padding
    c = np.empty((T, B, H), dtype=z.dtype)                            # C_1..C_T
    tanh_c = np.empty((T, B, H), dtype=z.dtype)                       # tanh(C_t), kept for backward
    recurrent, i_g = np.empty((B, G), dtype=z.dtype), np.empty((B, H), dtype=z.dtype)
    a_prev, c_prev = a0, c0
    for t in range(T):
        pre = gates[t]                                                # (B, 4H)
        pre += np.matmul(a_prev, w_a, out=recurrent)                  # + A_{t-1}·W_A
        sigmoid_in_place(pre[:, :2 * H])                              # i, f
        np.tanh(pre[:, 2 * H:3 * H], out=pre[:, 2 * H:3 * H])         # g
        sigmoid_in_place(pre[:, 3 * H:])                              # o
        i, f, g, o = pre[:, :H], pre[:, H:2 * H], pre[:, 2 * H:3 * H], pre[:, 3 * H:]
        np.multiply(f, c_prev, out=c[t])                              # C_t = f ⊙ C_{t-1} + i ⊙ g
        c[t] += np.multiply(i, g, out=i_g)
        np.tanh(c[t], out=tanh_c[t])
        np.multiply(o, tanh_c[t], out=a[t])                           # A_t = o ⊙ tanh(C_t)
        if padding is not None:                                       # A_t = 0 past the row's length
            np.copyto(a[t], 0, where=padding[t])
        a_prev, c_prev = a[t], c[t]
    return a, c[steps - 1, np.arange(B)], (gates, c, tanh_c)          # C_n: each row's last valid step


def lstm_backward_chain(d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, saved):
    """BPTT through the LSTM chain -> (dZ (T,B,4H), the same dZ for the recurrent side, dA_0, dC_0)."""
    gates, c, tanh_c = saved
    T, B, H = a.shape
    padding = padding_steps(steps, T, B)
    i, f, g, o = (gates[:, :, k * H:(k + 1) * H] for k in range(4))
    do_factor = 1 - o                                                 # ∂A_t/∂Z_o = tanh(C_t) ⊙ σ'(o)
    do_factor *= o
    do_factor *= tanh_c
    dc_factor = tanh_c * tanh_c                                       # ∂A_t/∂C_t = o ⊙ (1 − tanh² C_t)
    np.subtract(1, dc_factor, out=dc_factor)
    dc_factor *= o
    ifg_factor = np.empty((T, B, 3, H), dtype=a.dtype)                # ∂C_t/∂Z_i, ∂C_t/∂Z_f, ∂C_t/∂Z_g
    d_i, d_f, d_g = ifg_factor[:, :, 0], ifg_factor[:, :, 1], ifg_factor[:, :, 2]
    np.subtract(1, i, out=d_i)                                        # g ⊙ σ'(i)
    d_i *= i
    d_i *= g
    np.subtract(1, f, out=d_f)                                        # C_{t-1} ⊙ σ'(f)
    d_f *= f
    d_f[1:] *= c[:-1]
    d_f[0] *= c0
    np.multiply(g, g, out=d_g)                                        # i ⊙ tanh'(g)
    np.subtract(1, d_g, out=d_g)
    d_g *= i
    dz = np.empty((T, B, 4 * H), dtype=a.dtype)
    dz_gates = dz.reshape(T, B, 4, H)                                 # the same memory, one gate per row
    carry_a, carry_c = np.array(d_a_n), np.array(d_c_n)               # dL/dA_t, dL/dC_t arriving from step t+1
    g_a, g_c = np.empty((B, H), dtype=a.dtype), np.empty((B, H), dtype=a.dtype)
    valid = None if padding is None else ~padding
    for t in reversed(range(T)):
        np.add(d_a[t], carry_a, out=g_a)                              # dL/dA_t
        np.multiply(g_a, do_factor[t], out=dz_gates[t, :, 3])         # dL/dZ_o
        np.multiply(g_a, dc_factor[t], out=g_c)                       # dL/dC_t
        g_c += carry_c
        np.multiply(g_c[:, None], ifg_factor[t], out=dz_gates[t, :, :3])   # dL/dZ_i, dL/dZ_f, dL/dZ_g
        if padding is None:
            np.multiply(g_c, f[t], out=carry_c)                       # dL/dC_{t-1}
            np.matmul(dz[t], w_a.T, out=carry_a)                      # dL/dA_{t-1}
        else:                                                         # no gradient on padding; the carries pass
            np.copyto(dz[t], 0, where=padding[t])
            g_c *= f[t]
            np.copyto(carry_c, g_c, where=valid[t])
            np.matmul(dz[t], w_a.T, out=g_a)
            np.copyto(carry_a, g_a, where=valid[t])
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
