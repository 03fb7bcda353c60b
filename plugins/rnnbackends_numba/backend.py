"""The numba backend: the reference's semantics with BLAS GEMMs outside the time loop and njit kernels inside.

Forward: X·W_X for all steps is one GEMM written straight into the output a; the A-chain then runs either
as one njit call over all T steps (register tiles of explicit 512-bit FMAs against W_A packed once per
call) or, for large B·H², as one BLAS product per step followed by an njit bias+activation pass.
Backward: dZ_t and dZ_t·W_Aᵀ run the same way; after the loop d_w_x, d_w_a, d_x and d_b_a are one GEMM or
reduction each. Batch rows are independent along the whole chain, so with enough work they are split across
threads once per call, with no per-step synchronisation and results that do not depend on the split.
"""
import importlib.metadata
import importlib.util

import numpy as np

# Where per-step BLAS beats the register-tiled kernel for the product (B, H)·(H, H). Measured forward+backward,
# float32, on 2 cores (perf/ is the lab), by the thread count of NumPy's BLAS. On one thread the 8-row tiles run
# at or above OpenBLAS's rate for these skinny products without its per-call overhead and repacking of W_A: they
# win up to H=1760 (H=1024, B=64: 164 against 187 ms; H=1760, B=16: 100 against 110 ms), tie at H=2048 and lose
# once W_A outgrows the caches (H=4096, B=8: 320 against 223 ms), hence BLAS_STEP_MIN_H. On several threads BLAS
# splits each step's product while the tiles run on one. Interleaved A/B, 2 threads: it wins from B·H² = 2²⁴
# multiply-adds per step (H=512, B=64: 52.9 against 60.0 ms; H=1024, B=16: 33.3 against 34.8 ms), and from 2²²
# with 32 rows or more (H=256, B=64: 15.5 against 16.2 ms; H=512, B=32: 118 against 122 ms at T=256); with
# fewer rows the tiles win below 2²⁴ (H=1024, B=8: 21.0 against 23.0 ms; H=512, B=16: 14.7 against 15.4 ms).
# TRANSPOSED_PRODUCT_MAX_B: up to this B the per-step product is written transposed, (A_{t-1}·W_A)ᵀ =
# W_Aᵀ·A_{t-1}ᵀ (H, B): OpenBLAS runs it 15-50 % faster than (B, H)·(H, H) at H 512-1760, B 8-32 (2 threads
# and 1), more than the strided read of its result costs; at B=64 the two are level.
# PARALLEL_MIN_WORK: multiply-adds per call (T·B·H·H) from which splitting the batch rows across threads pays.
# After each of the GEMMs around the chain OpenBLAS's idle threads spin for about 0.1 s (2²⁸ cycles) before
# they sleep, taking the other cores from our threads: measured in whole calls, the split lost to the serial
# tiles or tied on every shape of the CPU grid that does not take per-step BLAS (up to 2³¹ multiply-adds), so
# it starts beyond them, at 2³³ (about 70 ms on one core), where the spin is a small part of the call. The same
# spin rules out splitting the units of each step across threads: at H=1760, B=16, T=50 that chain takes 28 ms
# after a pause but 118 ms right after a GEMM, against 51 ms for per-step BLAS.
# PARALLEL_MIN_WORK_QUIET_BLAS: the same when NumPy's BLAS runs on one thread (the CLI's default): it then has
# no idle workers to spin, and splitting the rows made whole forward+backward calls 10-16 % faster on 2 cores
# from H=32, B=32, T=96 (0.63 against 0.74 ms) up to H=1024, B=64, T=32 (142 against 168 ms).
BLAS_STEP_MIN_H = 2048
BLAS_STEP_MIN_WORK_THREADED = 1 << 24
BLAS_STEP_MIN_WORK_WIDE, BLAS_STEP_WIDE_B = 1 << 22, 32
TRANSPOSED_PRODUCT_MAX_B = 32
PARALLEL_MIN_WORK = 1 << 33
PARALLEL_MIN_WORK_QUIET_BLAS = 1 << 20


class NumbaBackend:
    """CPU kernels compiled with Numba @njit; numba is imported on first use, never at registration."""

    name = "numba"
    xp = np
    capabilities = frozenset({"tanh", "relu", "float32", "float64", "lengths"})

    @classmethod
    def availability(cls):
        """Available when numba is installed; found without importing it, so probing stays cheap."""
        try:
            if importlib.util.find_spec("numba") is None:
                return False, "numba is not installed (pip install numba)"
            return True, f"Numba {importlib.metadata.version('numba')}, kernels compiled on first use"
        except Exception as exc:  # a probe never raises
            return False, f"numba cannot be found: {type(exc).__name__}: {exc}"

    def __init__(self):
        from threadpoolctl import ThreadpoolController

        from . import kernels  # imports numba; each kernel compiles on first use and is cached on disk
        self.kernels = kernels
        self.blas = ThreadpoolController().select(user_api="blas").lib_controllers   # NumPy's BLAS

    def blas_threads(self):
        """Threads NumPy's BLAS uses now (1 under threadpoolctl limits such as the CLI's)."""
        return max((blas.get_num_threads() or 1 for blas in self.blas), default=1)

    def _plan(self, T, B, H):
        """(per-step BLAS?, threads sharing the batch rows) for a call of this shape."""
        import numba
        threads, blas_threaded = numba.get_num_threads(), self.blas_threads() > 1
        work = B * H * H                                                         # multiply-adds per step
        if H >= BLAS_STEP_MIN_H or blas_threaded and (
                work >= BLAS_STEP_MIN_WORK_THREADED or B >= BLAS_STEP_WIDE_B and work >= BLAS_STEP_MIN_WORK_WIDE):
            return True, 1
        if T * work < (PARALLEL_MIN_WORK if blas_threaded else PARALLEL_MIN_WORK_QUIET_BLAS):
            return False, 1
        return False, max(1, min(threads, -(-B // self.kernels.ROWS)))

    def path(self, T, B, H):
        """Which kernel path a call of this shape takes (for perf reports)."""
        blas, chunks = self._plan(T, B, H)
        return "blas-step" if blas else "blocked" if chunks == 1 else f"blocked, {chunks} threads"

    def forward_sequence(self, x, a0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh"):
        """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) -> (a (T,B,H), a_n (B,H), saved)."""
        k = self.kernels
        T, B, D = x.shape
        H = w_a.shape[0]
        relu = nonlinearity == "relu"
        steps = np.full(B, T, dtype=np.int64) if lengths is None else lengths    # valid steps per row (B,)
        a = np.empty((T, B, H), dtype=x.dtype)                                   # X_t·W_X, then A_t
        np.matmul(x.reshape(T * B, D), w_x, out=a.reshape(T * B, H))             # all steps in one GEMM
        blas, chunks = self._plan(T, B, H)
        if blas:
            z_rec, product = recurrent_product(k, w_a, B, x.dtype)               # A_{t-1}·W_A (B, H)
            for t in range(T):
                product(a0 if t == 0 else a[t - 1])
                k.forward_step_finish(a[t], z_rec, b_a, steps, t, relu)
        else:
            w_a_packed = k.pack_columns(w_a)                                     # W_A by column vectors
            w_a_t = k.transposed(w_a)                                            # W_Aᵀ (H, H)
            if chunks > 1:
                k.forward_rows_parallel(a, a0, w_a_packed, w_a_t, b_a, steps, relu, chunks)
            else:
                k.forward_rows(a, a0, w_a_packed, w_a_t, b_a, steps, relu, 0, B)
        a_n = a[steps - 1, np.arange(B)]                                         # last valid state (B, H)
        return a, a_n, (x, a0, w_x, w_a, a, steps, relu)

    def backward_sequence(self, saved, d_a, d_a_n=None):
        """BPTT -> (d_x (T,B,D), d_a0 (B,H), d_w_x (D,H), d_w_a (H,H), d_b_a (H,))."""
        k = self.kernels
        x, a0, w_x, w_a, a, steps, relu = saved
        T, B, D = x.shape
        H = w_a.shape[0]
        if d_a_n is None:
            d_a_n = np.zeros((B, H), dtype=a.dtype)
        dz = np.empty_like(a)                                                    # dL/dZ_t (T, B, H)
        blas, chunks = self._plan(T, B, H)
        if blas:
            d_next, product = recurrent_product(k, w_a.T, B, a.dtype)            # dZ_{t+1}·W_Aᵀ (B, H)
            for t in range(T - 1, -1, -1):
                k.backward_step_start(dz[t], d_a[t], d_a_n, d_next, a[t], steps, t, relu, 0, B)
                product(dz[t])
            d_next = np.ascontiguousarray(d_next)                                # dL/dA_0 (B, H)
        else:
            d_next = np.zeros((B, H), dtype=a.dtype)                             # dZ_{t+1}·W_Aᵀ, then dL/dA_0
            w_a_t_packed = k.pack_columns(k.transposed(w_a))                     # W_Aᵀ by column vectors
            if chunks > 1:
                k.backward_rows_parallel(dz, d_a, d_a_n, d_next, a, w_a_t_packed, w_a, steps, relu, chunks)
            else:
                k.backward_rows(dz, d_a, d_a_n, d_next, a, w_a_t_packed, w_a, steps, relu, 0, B)
        dz_all = dz.reshape(T * B, H)
        d_w_x = x.reshape(T * B, D).T @ dz_all                                   # one GEMM over all steps
        d_w_a = a[:-1].reshape((T - 1) * B, H).T @ dz[1:].reshape((T - 1) * B, H)  # A_{t-1}ᵀ·dZ_t, t ≥ 2 ...
        d_w_a += a0.T @ dz[0]                                                    # ... and t = 1
        d_b_a = dz_all.sum(axis=0)
        d_x = (dz_all @ w_x.T).reshape(T, B, D)                                  # one GEMM over all steps
        return d_x, d_next, d_w_x, d_w_a, d_b_a


def recurrent_product(kernels, w, B, dtype):
    """(out (B, H), product(p) writing p·w into out) for the per-step BLAS path; w (H, H) C-contiguous or a
    transpose of one (W_A forward, W_Aᵀ backward). Up to TRANSPOSED_PRODUCT_MAX_B rows BLAS writes wᵀ·pᵀ (H, B)
    and out is its transposed view; above, it reads a contiguous w (13-23 % faster than a transposed view)."""
    H = w.shape[1]
    if B <= TRANSPOSED_PRODUCT_MAX_B:
        w_t, out_t = kernels.contiguous(w.T), np.zeros((H, B), dtype=dtype)
        return out_t.T, lambda p: np.matmul(w_t, p.T, out=out_t)
    w, out = kernels.contiguous(w), np.zeros((B, H), dtype=dtype)
    return out, lambda p: np.matmul(p, w, out=out)
