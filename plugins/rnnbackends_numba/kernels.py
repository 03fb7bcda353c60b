"""The numba backend's njit kernels: the sequential A-chain, its backward, and a vectorisable tanh.

Importing this module imports numba; ``backend.py`` imports it only when the backend is used.

Shapes (lecture notation): a (T, B, H) holds X_t·W_X on entry to the forward chain and A_t on exit;
w_a_t = W_Aᵀ (H, H) so that row j of it is column j of W_A; dz (T, B, H) is dL/dZ_t.

The recurrent product is written as dot products over contiguous rows, blocked 4 batch rows × 4 units:
16 running sums share each loaded row of A_{t-1} and of W_Aᵀ, and ``reassoc`` lets LLVM vectorise every
sum (bit-identical from call to call: the compiled order is fixed). Units are the outer loop, so each block
of W_Aᵀ is read once per step and reused from L1 by every block of rows. The activation runs afterwards
over each finished row, where the branch-free ``tanh`` below vectorises too.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic, overload

# JIT flags, set here once. ``reassoc`` and ``contract`` only: sums may be reordered and fused into FMAs,
# but NaN and Inf keep their meaning (no ``nnan``/``ninf``), so NaN in padded d_a is never touched.
# error_model="numpy" drops Python's division checks, which would block vectorisation.
FASTMATH = {"reassoc", "contract"}
serial = njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
parallel = njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy", parallel=True)

ROWS = 4   # batch rows per register block (and the granule of the split across threads)
COLS = 4   # units per register block


# -- tanh -------------------------------------------------------------------------------------------
# tanh(x) = x + x·s·R(s), s = x², for |x| ≤ 0.625 (Cephes tanh/tanhf), else sign(x)·(1 − 2/(e^{2|x|} + 1))
# with e^y = 2^n·e^r, r = y − n·ln2 (Cephes exp/expf). Both branches are computed and one is selected,
# so a loop over a row vectorises; 2^n is built from its exponent bits.

@intrinsic
def _pow2_f64(typingctx, n):
    """2.0**n (float64) for an int64 n in [-1022, 1023], from the exponent bits."""
    if n != types.int64:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.shl(builder.add(args[0], ir.Constant(ir.IntType(64), 1023)),
                           ir.Constant(ir.IntType(64), 52))
        return builder.bitcast(bits, ir.DoubleType())
    return types.float64(types.int64), codegen


@intrinsic
def _pow2_f32(typingctx, n):
    """2.0**n (float32) for an int32 n in [-126, 127], from the exponent bits."""
    if n != types.int32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.shl(builder.add(args[0], ir.Constant(ir.IntType(32), 127)),
                           ir.Constant(ir.IntType(32), 23))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(types.int32), codegen


_D = np.float64
TANH_P = (_D(-9.64399179425052238628e-1), _D(-9.92877231001918586564e1), _D(-1.61468768441708447952e3))
TANH_Q = (_D(1.12811678491632931402e2), _D(2.23548839060100448583e3), _D(4.84406305325125486048e3))
EXP_P = (_D(1.26177193074810590878e-4), _D(3.02994407707441961300e-2), _D(9.99999999999999999910e-1))
EXP_Q = (_D(3.00198505138664455042e-6), _D(2.52448340349684104192e-3), _D(2.27265548208155028766e-1),
         _D(2.00000000000000000009e0))
LN2_HI, LN2_LO, LOG2E = _D(6.93145751953125e-1), _D(1.42860682030941723212e-6), _D(1.4426950408889634)
_S = np.float32
TANHF_P = (_S(-5.70498872745e-3), _S(2.06390887954e-2), _S(-5.37397155531e-2), _S(1.33314422036e-1),
           _S(-3.33332819422e-1))
EXPF_P = (_S(1.9875691500e-4), _S(1.3981999507e-3), _S(8.3334519073e-3), _S(4.1665795894e-2),
          _S(1.6666665459e-1), _S(5.0000001201e-1))
LN2F_HI, LN2F_LO, LOG2EF = _S(0.693359375), _S(-2.12194440e-4), _S(1.44269504088896341)


def _tanh_f64(x):
    """tanh of a float64, within a few ulp of np.tanh, branch-free."""
    z = abs(x)
    s = x * x
    small_num = x * s * ((TANH_P[0] * s + TANH_P[1]) * s + TANH_P[2])       # x + small_num/small_den
    small_den = ((s + TANH_Q[0]) * s + TANH_Q[1]) * s + TANH_Q[2]
    y = min(z + z, _D(40.0))                                                  # tanh(20) is 1.0 in float64
    n = np.floor(y * LOG2E + _D(0.5))
    r = (y - n * LN2_HI) - n * LN2_LO
    rr = r * r
    p = r * ((EXP_P[0] * rr + EXP_P[1]) * rr + EXP_P[2])
    q = ((EXP_Q[0] * rr + EXP_Q[1]) * rr + EXP_Q[2]) * rr + EXP_Q[3]
    u = q - p                                                                 # e^r = (q + p)/(q − p)
    big_den = (q + p) * _pow2_f64(np.int64(n)) + u                            # (e^y + 1)·u
    large = z > _D(0.625)
    base = math.copysign(_D(1.0), x) if large else x
    num = math.copysign(u + u, -x) if large else small_num
    den = big_den if large else small_den
    return base + num / den


def _tanh_f32(x):
    """tanh of a float32, within a few ulp of np.tanh, branch-free."""
    z = abs(x)
    s = x * x
    small = x + x * s * ((((TANHF_P[0] * s + TANHF_P[1]) * s + TANHF_P[2]) * s + TANHF_P[3]) * s + TANHF_P[4])
    y = min(z + z, _S(20.0))                                                  # tanh(10) is 1.0 in float32
    n = np.floor(y * LOG2EF + _S(0.5))
    r = (y - n * LN2F_HI) - n * LN2F_LO
    poly = (((((EXPF_P[0] * r + EXPF_P[1]) * r + EXPF_P[2]) * r + EXPF_P[3]) * r + EXPF_P[4]) * r
            + EXPF_P[5])
    e = (r * r * poly + r + _S(1.0)) * _pow2_f32(np.int32(n))
    large = math.copysign(_S(1.0) - _S(2.0) / (e + _S(1.0)), x)
    return large if z > _S(0.625) else small


def tanh(x):
    """Vectorisable tanh of a float32 or float64 scalar in njit code; np.tanh under NUMBA_DISABLE_JIT=1."""
    return np.tanh(x)


@overload(tanh)
def _tanh_overload(x):
    if x == types.float32:
        return _tanh_f32
    if x == types.float64:
        return _tanh_f64
    return None


@serial
def tanh_into(x, out):
    """out[...] = tanh(x) elementwise (1-D arrays); the accuracy tests call this."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@serial
def _activate_row(row, relu):
    """row (H,) ← g(row) in place."""
    if relu:
        zero = row.dtype.type(0)
        for j in range(row.shape[0]):
            v = row[j]
            row[j] = zero if v < zero else v                     # NaN stays NaN, as in np.maximum
    else:
        for j in range(row.shape[0]):
            row[j] = tanh(row[j])


# -- the recurrent product, blocked -----------------------------------------------------------------
# out[b, j] += Σ_k p[b, k]·m[j, k] for a block of rows b and units j; out holds the start value.

@serial
def _block_4x4(p, m, out, b, j):
    """Rows b..b+3 × units j..j+3 (2-D indexing throughout: no row views, no reference counting)."""
    s00, s01, s02, s03 = out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3]
    s10, s11, s12, s13 = out[b + 1, j], out[b + 1, j + 1], out[b + 1, j + 2], out[b + 1, j + 3]
    s20, s21, s22, s23 = out[b + 2, j], out[b + 2, j + 1], out[b + 2, j + 2], out[b + 2, j + 3]
    s30, s31, s32, s33 = out[b + 3, j], out[b + 3, j + 1], out[b + 3, j + 2], out[b + 3, j + 3]
    for k in range(p.shape[1]):
        x0, x1, x2, x3 = p[b, k], p[b + 1, k], p[b + 2, k], p[b + 3, k]
        w0, w1, w2, w3 = m[j, k], m[j + 1, k], m[j + 2, k], m[j + 3, k]
        s00 += x0 * w0
        s01 += x0 * w1
        s02 += x0 * w2
        s03 += x0 * w3
        s10 += x1 * w0
        s11 += x1 * w1
        s12 += x1 * w2
        s13 += x1 * w3
        s20 += x2 * w0
        s21 += x2 * w1
        s22 += x2 * w2
        s23 += x2 * w3
        s30 += x3 * w0
        s31 += x3 * w1
        s32 += x3 * w2
        s33 += x3 * w3
    out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s00, s01, s02, s03
    out[b + 1, j], out[b + 1, j + 1], out[b + 1, j + 2], out[b + 1, j + 3] = s10, s11, s12, s13
    out[b + 2, j], out[b + 2, j + 1], out[b + 2, j + 2], out[b + 2, j + 3] = s20, s21, s22, s23
    out[b + 3, j], out[b + 3, j + 1], out[b + 3, j + 2], out[b + 3, j + 3] = s30, s31, s32, s33


@serial
def _block_4x1(p, m, out, b, j):
    """Rows b..b+3 × unit j."""
    s0, s1, s2, s3 = out[b, j], out[b + 1, j], out[b + 2, j], out[b + 3, j]
    for k in range(p.shape[1]):
        w = m[j, k]
        s0 += p[b, k] * w
        s1 += p[b + 1, k] * w
        s2 += p[b + 2, k] * w
        s3 += p[b + 3, k] * w
    out[b, j], out[b + 1, j], out[b + 2, j], out[b + 3, j] = s0, s1, s2, s3


@serial
def _block_1x4(p, m, out, b, j):
    """Row b × units j..j+3."""
    s0, s1, s2, s3 = out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3]
    for k in range(p.shape[1]):
        x = p[b, k]
        s0 += x * m[j, k]
        s1 += x * m[j + 1, k]
        s2 += x * m[j + 2, k]
        s3 += x * m[j + 3, k]
    out[b, j], out[b, j + 1], out[b, j + 2], out[b, j + 3] = s0, s1, s2, s3


@serial
def _block_1x1(p, m, out, b, j):
    """Row b × unit j."""
    s = out[b, j]
    for k in range(p.shape[1]):
        s += p[b, k] * m[j, k]
    out[b, j] = s


@serial
def _rows_times_matrix(p, m, out, lo, hi, lengths, t):
    """out[b] += p[b]·mᵀ for rows lo ≤ b < hi still inside their length at step t: p (B, K), m (N, K).

    Units outermost: each block of COLS rows of m is read from memory once per call and reused from L1 by
    every block of batch rows.
    """
    n = m.shape[0]
    for j in range(0, n, COLS):
        full = j + COLS <= n                                     # else the last n % COLS units, one by one
        b = lo
        while b + ROWS <= hi:
            if t < max(lengths[b], lengths[b + 1], lengths[b + 2], lengths[b + 3]):
                if full:
                    _block_4x4(p, m, out, b, j)
                else:
                    for jj in range(j, n):
                        _block_4x1(p, m, out, b, jj)
            b += ROWS
        while b < hi:
            if t < lengths[b]:
                if full:
                    _block_1x4(p, m, out, b, j)
                else:
                    for jj in range(j, n):
                        _block_1x1(p, m, out, b, jj)
            b += 1


# -- forward ----------------------------------------------------------------------------------------

@serial
def forward_rows(a, a0, w_a_t, b_a, lengths, relu, lo, hi):
    """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) for rows lo..hi-1, in place in a (T, B, H); 0 past lengths."""
    T, B, H = a.shape
    for t in range(T):
        prev = a0 if t == 0 else a[t - 1]                        # A_{t-1} (B, H)
        out = a[t]                                               # X_t·W_X (B, H) → A_t
        for b in range(lo, hi):
            row = out[b]
            for j in range(H):
                row[j] += b_a[j]
        _rows_times_matrix(prev, w_a_t, out, lo, hi, lengths, t)
        for b in range(lo, hi):
            if t < lengths[b]:
                _activate_row(out[b], relu)
            else:
                out[b, :] = 0


@parallel
def forward_rows_parallel(a, a0, w_a_t, b_a, lengths, relu, n_chunks):
    """forward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = a.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo = ROWS * (blocks * c // n_chunks)
        hi = min(B, ROWS * (blocks * (c + 1) // n_chunks))
        forward_rows(a, a0, w_a_t, b_a, lengths, relu, lo, hi)


@serial
def forward_step_finish(out, z_rec, b_a, lengths, t, relu):
    """A_t = g(out + z_rec + b_A) in place in out (B, H), 0 past lengths: the large-H step after BLAS."""
    B, H = out.shape
    for b in range(B):
        row = out[b]
        if t < lengths[b]:
            rec = z_rec[b]
            for j in range(H):
                row[j] += b_a[j] + rec[j]
            _activate_row(row, relu)
        else:
            row[:] = 0


# -- backward ---------------------------------------------------------------------------------------

@serial
def backward_step_start(dz, d_a, d_a_n, d_next, a, lengths, t, relu, lo, hi):
    """dL/dZ_t = (dL/dA_t + dZ_{t+1}·W_Aᵀ) ⊙ g'(Z_t) for rows lo..hi-1, then d_next[b] ← 0 for the product.

    dz, d_a, d_next, a: (B, H) at step t. d_a counts only inside a row's length, d_a_n (B, H) at its end,
    where nothing arrives from later steps; past the length dZ_t is 0.
    """
    H = dz.shape[1]
    for b in range(lo, hi):
        dz_row, a_row = dz[b], a[b]
        if t < lengths[b]:
            d_a_row = d_a[b]
            arriving = d_a_n[b] if t == lengths[b] - 1 else d_next[b]
            if relu:
                for j in range(H):
                    dz_row[j] = (d_a_row[j] + arriving[j]) * (a_row[j] > 0)
            else:
                for j in range(H):
                    v = a_row[j]
                    dz_row[j] = (d_a_row[j] + arriving[j]) * (1 - v * v)
        else:
            dz_row[:] = 0
        d_next[b, :] = 0


@serial
def backward_rows(dz, d_a, d_a_n, d_next, a, w_a, lengths, relu, lo, hi):
    """BPTT for rows lo..hi-1: dz (T, B, H) ← dL/dZ_t; d_next (B, H), zero on entry, ends as dL/dA_0."""
    T = dz.shape[0]
    for t in range(T - 1, -1, -1):
        backward_step_start(dz[t], d_a[t], d_a_n, d_next, a[t], lengths, t, relu, lo, hi)
        _rows_times_matrix(dz[t], w_a, d_next, lo, hi, lengths, t)   # dZ_t·W_Aᵀ: the only sequential product


@parallel
def backward_rows_parallel(dz, d_a, d_a_n, d_next, a, w_a, lengths, relu, n_chunks):
    """backward_rows with the batch rows split into n_chunks runs of whole register blocks, one per thread."""
    B = dz.shape[1]
    blocks = (B + ROWS - 1) // ROWS
    for c in prange(n_chunks):
        lo = ROWS * (blocks * c // n_chunks)
        hi = min(B, ROWS * (blocks * (c + 1) // n_chunks))
        backward_rows(dz, d_a, d_a_n, d_next, a, w_a, lengths, relu, lo, hi)
