"""The numba backend's GRU and LSTM chains: a vectorisable sigmoid, and each step's gate math fused in one pass.

Importing this module imports numba (through kernels.py). Shapes, lecture notation: z (T, B, G·H) holds
X_t·W_X on entry to a forward chain and the gates after their nonlinearities on exit (G = 3, r u n, for GRU;
G = 4, i f g o, for LSTM, PyTorch's orders); rec (B, G·H) is A_{t-1}·W_A of one step, without b_R; a (T, B, H)
A_1..A_T, 0 past a row's length; d_next (B, H) is the product dZ_R,t+1·W_Aᵀ arriving at step t.

A step is the recurrent product of all G gates at once, (B, H)·(H, G·H), in kernels.py's register tiles (or one
BLAS call, chosen in backend.py), then one pass over each valid row computing every gate, the state and what
backward keeps, with the sigmoid and tanh below inlined so the pass vectorises. Rows are independent along the
chain, so the row loops take any range lo..hi and a split across threads changes no bit.
"""
import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload

from . import kernels
from .kernels import ROWS, parallel, serial, tanh

_rows_times_matrix, _pow2_f32, _pow2_f64 = kernels._rows_times_matrix, kernels._pow2_f32, kernels._pow2_f64
EXP_P, EXP_Q, LN2_HI, LN2_LO, LOG2E = kernels.EXP_P, kernels.EXP_Q, kernels.LN2_HI, kernels.LN2_LO, kernels.LOG2E
EXPF_P, LN2F_HI, LN2F_LO, LOG2EF = kernels.EXPF_P, kernels.LN2F_HI, kernels.LN2F_LO, kernels.LOG2EF

# -- sigmoid ----------------------------------------------------------------------------------------
# σ(x) = 1/(1 + e^-|x|) for x ≥ 0 and e^-|x|/(1 + e^-|x|) below, so it never divides by a huge e^|x| and keeps
# its relative accuracy down to σ's smallest normal values; e^-y = 2^n·e^r as in kernels.tanh (Cephes exp, expf),
# |x| capped where 2^n stays normal, and 0 beyond the cap on the negative side (there σ < the smallest normal).
# Branch-free (both sides computed, one selected), so loops over it vectorise. NaN stays NaN.

SIGMOID_CAP = np.float64(708.5)       # σ(-708.5) < 2^-1022, the smallest normal; 2^n ≥ 2^-1022
SIGMOIDF_CAP = np.float32(87.5)       # σ(-87.5) < 2^-126; 2^n ≥ 2^-126


def _sigmoid_f64(x):
    """σ of a float64, within a few ulp of 1/(1 + e^-x), branch-free."""
    z = abs(x)
    y = SIGMOID_CAP if z > SIGMOID_CAP else z                                 # NaN passes
    n = np.floor(y * -LOG2E + 0.5)
    r = (-y - n * LN2_HI) - n * LN2_LO
    rr = r * r
    p = r * ((EXP_P[0] * rr + EXP_P[1]) * rr + EXP_P[2])
    q = ((EXP_Q[0] * rr + EXP_Q[1]) * rr + EXP_Q[2]) * rr + EXP_Q[3]
    den = q - p                                                               # e^-y = num_e / den
    num_e = (q + p) * _pow2_f64(np.int64(n))
    num = den if x >= 0.0 else (0.0 if z > SIGMOID_CAP else num_e)
    return num / (den + num_e)


_ONE_F32, _ZERO_F32 = np.float32(1.0), np.float32(0.0)


def _sigmoid_f32(x):
    """σ of a float32, within a few ulp of 1/(1 + e^-x), branch-free."""
    z = abs(x)
    y = SIGMOIDF_CAP if z > SIGMOIDF_CAP else z
    n = np.floor(y * -LOG2EF + np.float32(0.5))
    r = (-y - n * LN2F_HI) - n * LN2F_LO
    poly = (((((EXPF_P[0] * r + EXPF_P[1]) * r + EXPF_P[2]) * r + EXPF_P[3]) * r + EXPF_P[4]) * r
            + EXPF_P[5])
    e = (r * r * poly + r + _ONE_F32) * _pow2_f32(np.int32(n))              # e^-|x|
    num = _ONE_F32 if x >= _ZERO_F32 else (_ZERO_F32 if z > SIGMOIDF_CAP else e)
    return num / (_ONE_F32 + e)


def sigmoid(x):
    """Vectorisable σ of a float32 or float64 scalar in njit code; NumPy's exp under NUMBA_DISABLE_JIT=1."""
    e = np.exp(-abs(x))
    return (np.ones_like(e) if x >= 0 else e) / (1 + e)


@overload(sigmoid)
def _sigmoid_overload(x):
    if x == types.float32:
        return _sigmoid_f32
    if x == types.float64:
        return _sigmoid_f64
    return None


@serial
def sigmoid_into(x, out):
    """out[...] = σ(x) elementwise (1-D arrays); the accuracy tests call this."""
    for i in range(x.shape[0]):
        out[i] = sigmoid(x[i])


# -- GRU --------------------------------------------------------------------------------------------

@serial
def gru_step(z_t, a_t, prev, rec, z_rn_t, b_a, b_r, lengths, t, lo, hi):
    """Gates and A_t of rows lo..hi-1 at step t from X_t·W_X (z_t) and A_{t-1}·W_A (rec): z_t ← r, u, n."""
    # r = σ(Z_Xr + b_Ar + R_r + b_Rr), u likewise, n = tanh(Z_Xn + b_An + r ⊙ (R_n + b_Rn)) with R = rec,
    # A_t = (1 − u) ⊙ n + u ⊙ A_{t-1}; z_rn_t keeps R_n + b_Rn. z_t, a_t, prev (B, ·) at step t; rec may be a
    # transposed view of the (G·H, B) BLAS product.
    H = a_t.shape[1]
    one = a_t.dtype.type(1)
    for b in range(lo, hi):
        a_row = a_t[b]
        if t < lengths[b]:
            z_row, rec_row, prev_row, z_rn_row = z_t[b], rec[b], prev[b], z_rn_t[b]
            for j in range(H):
                r = sigmoid((z_row[j] + b_a[j]) + (rec_row[j] + b_r[j]))
                u = sigmoid((z_row[H + j] + b_a[H + j]) + (rec_row[H + j] + b_r[H + j]))
                z_rn = rec_row[2 * H + j] + b_r[2 * H + j]
                n = tanh((z_row[2 * H + j] + b_a[2 * H + j]) + r * z_rn)
                z_row[j], z_row[H + j], z_row[2 * H + j], z_rn_row[j] = r, u, n, z_rn
                a_row[j] = (one - u) * n + u * prev_row[j]
        else:
            a_row[:] = 0


@serial
def gru_forward_rows(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, lengths, lo, hi):
    """The GRU chain for rows lo..hi-1 with the product in register tiles; rec (B, 3H) is scratch."""
    for t in range(z.shape[0]):
        prev = a0 if t == 0 else a[t - 1]                                     # A_{t-1} (B, H)
        rec[lo:hi] = 0
        _rows_times_matrix(prev, w_a_packed, w_a_t, rec, lo, hi, lengths, t)  # A_{t-1}·W_A, all gates
        gru_step(z[t], a[t], prev, rec, z_rn[t], b_a, b_r, lengths, t, lo, hi)


@parallel
def gru_forward_rows_parallel(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, lengths, n_chunks):
    """gru_forward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo, hi = ROWS * (blocks * c // n_chunks), min(B, ROWS * (blocks * (c + 1) // n_chunks))
        gru_forward_rows(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, lengths, lo, hi)


@serial
def gru_backward_step(dz_x_t, dz_r_t, carry, d_next, d_a_t, d_a_n, gates_t, z_rn_t, prev, lengths, t, lo, hi):
    """dZ_X, dZ_R of rows lo..hi-1 at step t; carry ← the part u ⊙ dL/dA_t of dL/dA_{t-1} (the rest: d_next)."""
    # dL/dA_t = d_a + carry + d_next (d_a + dL/dA_n at a row's last step), then through A_t = (1 − u) n + u A_{t-1}.
    H = prev.shape[1]
    one = prev.dtype.type(1)
    for b in range(lo, hi):
        dz_x_row, dz_r_row, carry_row = dz_x_t[b], dz_r_t[b], carry[b]
        if t < lengths[b]:
            if t == lengths[b] - 1:                                           # nothing arrives from later steps
                carry_row[:] = d_a_n[b]
                d_next[b, :] = 0
            gates, d_a_row, d_next_row, prev_row, z_rn_row = gates_t[b], d_a_t[b], d_next[b], prev[b], z_rn_t[b]
            for j in range(H):
                g = d_a_row[j] + (carry_row[j] + d_next_row[j])               # dL/dA_t
                r, u, n = gates[j], gates[H + j], gates[2 * H + j]
                dn = g * (one - u) * (one - n * n)
                du = g * (prev_row[j] - n) * u * (one - u)
                dr = dn * z_rn_row[j] * r * (one - r)
                dz_x_row[j], dz_x_row[H + j], dz_x_row[2 * H + j] = dr, du, dn
                dz_r_row[j], dz_r_row[H + j], dz_r_row[2 * H + j] = dr, du, dn * r
                carry_row[j] = g * u
        else:
            dz_x_row[:] = 0
            dz_r_row[:] = 0
            carry_row[:] = 0


@serial
def gru_backward_rows(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, w_a, lengths, lo, hi):
    """GRU BPTT for rows lo..hi-1 with the product in register tiles; dL/dA_0 = carry + d_next on exit."""
    for t in range(dz_x.shape[0] - 1, -1, -1):
        prev = a0 if t == 0 else a[t - 1]
        gru_backward_step(dz_x[t], dz_r[t], carry, d_next, d_a[t], d_a_n, gates[t], z_rn[t], prev, lengths, t,
                          lo, hi)
        d_next[lo:hi] = 0
        _rows_times_matrix(dz_r[t], w_a_t_packed, w_a, d_next, lo, hi, lengths, t)   # dZ_R,t·W_Aᵀ


@parallel
def gru_backward_rows_parallel(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, w_a,
                               lengths, n_chunks):
    """gru_backward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo, hi = ROWS * (blocks * c // n_chunks), min(B, ROWS * (blocks * (c + 1) // n_chunks))
        gru_backward_rows(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, w_a, lengths,
                          lo, hi)


# -- LSTM -------------------------------------------------------------------------------------------

@serial
def lstm_step(z_t, a_t, c_t, c_prev, rec, bias, lengths, t, lo, hi):
    """Gates, C_t and A_t of rows lo..hi-1 at step t: z_t ← i, f, g, o."""
    # i, f, o = σ(Z + b), g = tanh(Z + b) with Z = X_t·W_X + A_{t-1}·W_A (z_t + rec), b = b_A + b_R;
    # C_t = f ⊙ C_{t-1} + i ⊙ g, A_t = o ⊙ tanh(C_t). rec may be a transposed view of the BLAS product.
    H = a_t.shape[1]
    for b in range(lo, hi):
        a_row = a_t[b]
        if t < lengths[b]:
            z_row, rec_row, c_row, c_prev_row = z_t[b], rec[b], c_t[b], c_prev[b]
            for j in range(H):
                i = sigmoid(z_row[j] + (rec_row[j] + bias[j]))
                f = sigmoid(z_row[H + j] + (rec_row[H + j] + bias[H + j]))
                g = tanh(z_row[2 * H + j] + (rec_row[2 * H + j] + bias[2 * H + j]))
                o = sigmoid(z_row[3 * H + j] + (rec_row[3 * H + j] + bias[3 * H + j]))
                c = f * c_prev_row[j] + i * g
                z_row[j], z_row[H + j], z_row[2 * H + j], z_row[3 * H + j] = i, f, g, o
                c_row[j] = c
                a_row[j] = o * tanh(c)
        else:
            a_row[:] = 0


@serial
def lstm_forward_rows(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, lengths, lo, hi):
    """The LSTM chain for rows lo..hi-1 with the product in register tiles; rec (B, 4H) is scratch."""
    for t in range(z.shape[0]):
        prev, c_prev = (a0, c0) if t == 0 else (a[t - 1], c[t - 1])          # A_{t-1}, C_{t-1} (B, H)
        rec[lo:hi] = 0
        _rows_times_matrix(prev, w_a_packed, w_a_t, rec, lo, hi, lengths, t)
        lstm_step(z[t], a[t], c[t], c_prev, rec, bias, lengths, t, lo, hi)


@parallel
def lstm_forward_rows_parallel(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, lengths, n_chunks):
    """lstm_forward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c_ in prange(n_chunks):
        lo, hi = ROWS * (blocks * c_ // n_chunks), min(B, ROWS * (blocks * (c_ + 1) // n_chunks))
        lstm_forward_rows(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, lengths, lo, hi)


@serial
def lstm_backward_step(dz_t, carry_c, d_next, d_a_t, d_a_n, d_c_n, gates_t, c_t, c_prev, lengths, t, lo, hi):
    """dZ of rows lo..hi-1 at step t; carry_c ← dL/dC_{t-1} (dL/dA_{t-1} is d_next after the product)."""
    H = c_t.shape[1]
    one = c_t.dtype.type(1)
    for b in range(lo, hi):
        dz_row, carry_c_row = dz_t[b], carry_c[b]
        if t < lengths[b]:
            if t == lengths[b] - 1:                                           # the final states' gradients
                carry_c_row[:] = d_c_n[b]
                d_next[b, :] = d_a_n[b]
            gates, d_a_row, d_next_row, c_row, c_prev_row = gates_t[b], d_a_t[b], d_next[b], c_t[b], c_prev[b]
            for j in range(H):
                g_a = d_a_row[j] + d_next_row[j]                              # dL/dA_t
                i, f, g, o = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
                tanh_c = tanh(c_row[j])
                g_c = g_a * o * (one - tanh_c * tanh_c) + carry_c_row[j]      # dL/dC_t
                dz_row[j] = g_c * g * i * (one - i)
                dz_row[H + j] = g_c * c_prev_row[j] * f * (one - f)
                dz_row[2 * H + j] = g_c * i * (one - g * g)
                dz_row[3 * H + j] = g_a * tanh_c * o * (one - o)
                carry_c_row[j] = g_c * f
        else:
            dz_row[:] = 0
            carry_c_row[:] = 0


@serial
def lstm_backward_rows(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, w_a, lengths, lo, hi):
    """LSTM BPTT for rows lo..hi-1 with the product in register tiles; d_next ends as dL/dA_0, carry_c dL/dC_0."""
    for t in range(dz.shape[0] - 1, -1, -1):
        c_prev = c0 if t == 0 else c[t - 1]
        lstm_backward_step(dz[t], carry_c, d_next, d_a[t], d_a_n, d_c_n, gates[t], c[t], c_prev, lengths, t, lo, hi)
        d_next[lo:hi] = 0
        _rows_times_matrix(dz[t], w_a_t_packed, w_a, d_next, lo, hi, lengths, t)     # dZ_t·W_Aᵀ


@parallel
def lstm_backward_rows_parallel(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, w_a, lengths,
                                n_chunks):
    """lstm_backward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = dz.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c_ in prange(n_chunks):
        lo, hi = ROWS * (blocks * c_ // n_chunks), min(B, ROWS * (blocks * (c_ + 1) // n_chunks))
        lstm_backward_rows(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, w_a, lengths, lo, hi)
