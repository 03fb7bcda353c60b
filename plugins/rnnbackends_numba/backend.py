"""The numba backend: a chain backend (rnnbackends.chain) whose chain runs in njit kernels (kernels.py).

The A-chain runs either as one njit call over all T steps (register tiles of explicit vector FMAs against W_A
packed once per call) or, for large B·H², as one BLAS product per step followed by an njit bias+activation
pass; backward runs dZ_t and dZ_t·W_Aᵀ the same way. Batch rows are independent along the whole chain, so with
enough work they are split across threads once per call, with no per-step synchronisation; a call with too few
rows splits its units instead, with one barrier per step. Results do not depend on either split.
"""
import importlib.metadata
import importlib.util
import os
import sys

import numpy as np

from rnnbackends.chain import ChainBackend
from rnnbackends.dispatch import idle_cores

# Path thresholds, measured forward+backward in float32 on 2 cores (the figures: docs/backends/numba.md, Thresholds).
# Per-step BLAS from H = 2048 (W_A outgrows the caches; below, the tiles beat OpenBLAS's repacking per call).
BLAS_STEP_MIN_H = 2048
# With NumPy's BLAS on several threads it splits each step's product while the tiles run on one core: BLAS wins
# from B·H² = 2²⁴ multiply-adds per step, or 2²² with 32 rows or more.
BLAS_STEP_MIN_WORK_THREADED = 1 << 24
BLAS_STEP_MIN_WORK_WIDE, BLAS_STEP_WIDE_B = 1 << 22, 32
# Up to this B the per-step product is written transposed, W_Aᵀ·A_{t-1}ᵀ (H, B): 15-50 % faster in OpenBLAS.
TRANSPOSED_PRODUCT_MAX_B = 32
# A short call (T·B·2¹³ < G·H², e.g. one step of generation) takes per-step BLAS against W_A as it is: the tiles'
# two copies of W_A per call (packed, transposed) would cost more than the few rows' steps they speed up.
SHORT_CALL_ROWS = 1 << 13
# Batch rows are split across numba's threads from this many multiply-adds per call (T·B·G·H²), and only while
# NumPy's BLAS runs on one thread: threaded OpenBLAS's idle workers spin ~0.1 s after each GEMM and take our cores.
# Below it, waking the other thread (0.2-0.5 ms on a VM whose idle vCPU sleeps) and halving each thread's rows
# cost more than the split saves: 2 threads over one, interleaved, quiet (forward, fwd+bwd): simple cell H=128,
# B=8, T=64 (2²³) 0.80×, 0.83×; LSTM H=64, B=8, T=64 (2²³) 0.86×, 0.88×; H=128, B=16, T=64 (2²⁴) 0.98×, 0.93×;
# from 2²⁴ to 2²⁵ the split starts to win (GRU H=128, B=8, T=64 1.12×, 1.12×; simple cell H=256, B=8, T=64 1.31×,
# 1.18×).
PARALLEL_MIN_WORK = 1 << 24
# With too few rows to split (B ≤ ROWS), the units are split across threads instead, one barrier per step, from
# 2¹⁶ multiply-adds per step (B·H²) and 2²⁵ per call: waking the other thread costs ~0.2-0.5 ms per call on a VM
# whose idle vCPU sleeps. Through the handle, 2 threads, quiet (fwd, fwd+bwd over one thread): B=1, H=256, T=672
# 1.31×, 1.11×; H=512, T=672 1.56×, 1.35×; H=512, T=96 (2²⁴·⁶) 1.00×, 1.01×; H=256, T=96 0.78×, 0.99×.
# With one row (B=1) each step streams all of W_A for that row alone, and halving each thread's share of it pays
# from half the call work, 2²⁴ (AVX-512 EPYC, interleaved, time split over unsplit, forward, fwd+bwd): simple cell
# H=512, T=96 0.90-0.93×, 0.88-0.90×; GRU H=256, T=96 0.84×, 0.86×; LSTM H=256, T=64 0.81×, 0.88×; while with 4-8
# rows in the same band it does not (GRU H=128, B=8, T=64 1.03×, 0.99×; LSTM H=128, B=4, T=64 1.02×, 1.08×).
COLUMNS_MIN_WORK, COLUMNS_MIN_CALL_WORK = 1 << 16, 1 << 25
# A gated cell's work counts its G gates (W_A is H × G·H): per-step BLAS from G·H² ≥ 2048², and with BLAS
# threads by the work rules above. On one thread (AVX2, loaded machine) tiles and per-step BLAS tied within
# noise from B = 32 at H = 128-512 and the tiles won 1.3-1.4× at B = 8.
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
# The GEMMs around the chain (X·W_X, dW_X, dX, dW_A) are split into one part per numba thread, each a
# single-threaded BLAS call on a Python thread (NumPy releases the GIL), from this many multiply-adds (~0.8 ms on
# one core; split, ~0.4 ms plus the ~0.2 ms that waking the helper thread cost per GEMM in whole calls: at 2²²·⁶,
# B=1, H=256, T=96, forward+backward took 2.8 ms split and 2.1 ms not; docs/backends/numba.md).
GEMM_SPLIT_MIN_WORK = 1 << 25
# Optional front-end kernels (docs/plugins.md), each one pass where NumPy makes several: frontend_kernels.py.
FRONTEND_KERNELS = ("softmax_cross_entropy", "embedding_backward", "adam_update")


class NumbaBackend(ChainBackend):
    """CPU kernels compiled with Numba @njit; numba is imported on first use, never at registration."""

    name = "numba"
    xp = np
    owns_threads = True   # NumPy's BLAS held to one thread during each call (rnnbackends.dispatch)
    capabilities = frozenset({"rnn", "gru", "lstm", "tanh", "relu", "float32", "float64", "lengths", "matmul",
                              *FRONTEND_KERNELS})

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

        # Waiting workers sleep rather than spin: a call is split once, so one wake-up per call costs nothing, and a
        # spinning worker would burn the core that other work (or a busy machine's next thread) needs.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        start_threads_on_own_openmp()
        from . import kernels  # imports numba; each kernel compiles on first use and is cached on disk
        self.kernels = kernels
        from . import frontend_kernels
        for name in FRONTEND_KERNELS:
            setattr(self, name, getattr(frontend_kernels, name))
        self.blas = ThreadpoolController().select(user_api="blas").lib_controllers   # NumPy's BLAS
        self.pools = {}                                                  # threads of split GEMMs, by process and count
        self.threading_layer = None                                      # numba's, read when a barrier kernel may run

    def matmul(self, a, b, out=None):
        """a·b (into out): with NumPy's BLAS on one thread, split along the longer side of the result across
        numba's thread count, one single-threaded BLAS call per part, so the GEMMs use the threads the chain uses."""
        import numba
        (M, K), N = a.shape, b.shape[1]
        if M * N * K < GEMM_SPLIT_MIN_WORK or numba.get_num_threads() < 2 or self.blas_threads() > 1:
            return np.matmul(a, b, out=out)                                      # the checks cheapest first
        parts = min(numba.get_num_threads(), idle_cores())
        if parts < 2:
            return np.matmul(a, b, out=out)
        if out is None:
            out = np.empty((M, N), dtype=np.result_type(a, b))
        rows = M >= N                                                            # split a's rows, else b's columns
        cuts = [(M if rows else N) * i // parts for i in range(parts + 1)]
        pieces = [(a[lo:hi], b, out[lo:hi]) if rows else (a, b[:, lo:hi], out[:, lo:hi])
                  for lo, hi in zip(cuts[:-1], cuts[1:])]
        key = (os.getpid(), parts)                                               # a forked child starts its own
        pool = self.pools.get(key)
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor
            pool = self.pools[key] = ThreadPoolExecutor(parts - 1, thread_name_prefix="rnnbackends-gemm")
        waiting = [pool.submit(np.matmul, *piece[:2], out=piece[2]) for piece in pieces[1:]]
        np.matmul(*pieces[0][:2], out=pieces[0][2])
        for future in waiting:
            future.result()
        return out

    def empty(self, shape, dtype):
        """An uninitialised array starting on a cache line (kernels.empty): the chain's X_t·W_X."""
        return self.kernels.empty(shape, dtype)

    def blas_threads(self):
        """Threads NumPy's BLAS uses now (1 under threadpoolctl limits such as the CLI's)."""
        return max((blas.get_num_threads() or 1 for blas in self.blas), default=1)

    def _plan(self, T, B, H, G=1, itemsize=4):
        """(per-step BLAS?, threads sharing the call, split of the units rather than the rows?) for a call of this
        shape, G gates per cell."""
        work = B * H * G * H                                                     # multiply-adds per step
        if G * H * H >= BLAS_STEP_MIN_H ** 2 or T * B * SHORT_CALL_ROWS < G * H * H:
            return True, 1, False
        if T * work < PARALLEL_MIN_WORK and work < BLAS_STEP_MIN_WORK_WIDE:        # small: no thread counts read
            return False, 1, False
        import numba
        threads, blas_threaded = numba.get_num_threads(), self.blas_threads() > 1
        if blas_threaded and (work >= BLAS_STEP_MIN_WORK_THREADED
                              or B >= BLAS_STEP_WIDE_B and work >= BLAS_STEP_MIN_WORK_WIDE):
            return True, 1, False
        if blas_threaded or T * work < PARALLEL_MIN_WORK or threads < 2:
            return False, 1, False
        chunks = min(threads, -(-B // self.kernels.ROWS))
        if chunks > 1:
            return False, min(chunks, idle_cores()), False                      # idle cores read only when it matters
        vectors, remainder = divmod(H, self.kernels.VECTOR_BYTES // itemsize)
        if (work >= COLUMNS_MIN_WORK and T * work >= COLUMNS_MIN_CALL_WORK >> (B == 1) and not remainder
                and vectors >= 2 and self._barriers_safe()):
            parts = min(threads, vectors, idle_cores())
            return False, parts, parts > 1
        return False, 1, False

    def _barriers_safe(self):
        """Whether numba's threading layer runs every part of a prange on its own thread at once (OpenMP and
        workqueue do; TBB may run two parts one after the other on one thread, which a barrier would deadlock)."""
        if self.threading_layer is None:
            import numba
            from numba.np.ufunc import parallel
            parallel._launch_threads()
            self.threading_layer = numba.threading_layer()
        return self.threading_layer in ("omp", "workqueue")

    def path(self, T, B, H, cell="rnn", itemsize=4):
        """Which kernel path a call of this shape takes (for perf reports)."""
        blas, parts, columns = self._plan(T, B, H, GATES[cell], itemsize)
        return ("blas-step" if blas else "blocked" if parts == 1
                else f"blocked, {parts} threads" + (" by units" if columns else ""))

    def rnn_forward_chain(self, a, a0, w_a, b_a, steps, nonlinearity):
        """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) in place of X_t·W_X in a (T, B, H) -> (a, None)."""
        k = self.kernels
        T, B, H = a.shape
        relu = nonlinearity == "relu"
        blas, chunks, columns = self._plan(T, B, H, itemsize=a.itemsize)
        if blas:
            z_rec, product = recurrent_product(k, w_a, T, B, a.dtype)            # A_{t-1}·W_A (B, H)
            for t in range(T):
                product(a0 if t == 0 else a[t - 1])
                k.forward_step_finish(a[t], z_rec, b_a, steps, t, relu)
        else:
            w_a_packed, w_a_t = k.pack_for_tiles(w_a)                            # W_A by column vectors, W_Aᵀ
            if columns:
                k.forward_columns_parallel(a, a0, w_a_packed, b_a, steps, relu, chunks, barrier_counters())
            elif chunks > 1:
                k.forward_rows_parallel(a, a0, w_a_packed, w_a_t, b_a, steps, relu, chunks)
            else:
                k.forward_rows(a, a0, w_a_packed, w_a_t, b_a, steps, relu, 0, B)
        return a, None

    def rnn_backward_chain(self, d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved):
        """dZ_t for all steps (T, B, H) and dL/dA_0 (B, H), one njit call or per-step BLAS."""
        k = self.kernels
        T, B, H = a.shape
        relu = nonlinearity == "relu"
        dz = k.empty(a.shape, a.dtype)                                           # dL/dZ_t (T, B, H)
        blas, chunks, columns = self._plan(T, B, H, itemsize=a.itemsize)
        if blas:
            d_next, product = recurrent_product(k, w_a.T, T, B, a.dtype)         # dZ_{t+1}·W_Aᵀ (B, H)
            for t in range(T - 1, -1, -1):
                k.backward_step_start(dz[t], d_a[t], d_a_n, d_next, a[t], steps, t, relu, 0, B)
                product(dz[t])
            return dz, np.ascontiguousarray(d_next)                              # dL/dA_0 (B, H)
        d_next = k.zeros((B, H), a.dtype)                                        # dZ_{t+1}·W_Aᵀ, then dL/dA_0
        w_a_t_packed = k.pack_columns(k.transposed(w_a))                         # W_Aᵀ by column vectors
        if columns:
            k.backward_columns_parallel(dz, d_a, d_a_n, d_next, a, w_a_t_packed, steps, relu, chunks,
                                        barrier_counters())
        elif chunks > 1:
            k.backward_rows_parallel(dz, d_a, d_a_n, d_next, a, w_a_t_packed, w_a, steps, relu, chunks)
        else:
            k.backward_rows(dz, d_a, d_a_n, d_next, a, w_a_t_packed, w_a, steps, relu, 0, B)
        return dz, d_next

    def gru_forward_chain(self, z, a0, w_a, b_a, b_r, steps):
        """The GRU chain over z = X_t·W_X (T, B, 3H), z overwritten by the gates r, u, n -> (a, saved)."""
        k = self.kernels
        T, B, G = z.shape
        H = G // 3
        a = k.empty((T, B, H), z.dtype)                                          # A_1..A_T
        z_rn = k.empty((T, B, H), z.dtype)                                       # A_{t-1}·W_An + b_Rn
        blas, chunks, columns = self._plan(T, B, H, 3, z.itemsize)
        if blas:
            rec, product = recurrent_product(k, w_a, T, B, z.dtype)              # A_{t-1}·W_A (B, 3H)
            for t in range(T):
                prev = a0 if t == 0 else a[t - 1]
                product(prev)
                k.gru_step(z[t], a[t], prev, rec, z_rn[t], b_a, b_r, steps, t, 0, B, 0, H)
        else:
            rec = k.empty((B, G), z.dtype)
            w_a_packed, w_a_t = k.pack_for_tiles(w_a)                            # W_A by column vectors, W_Aᵀ
            if columns:
                k.gru_forward_columns_parallel(z, a, a0, z_rn, rec, w_a_packed, b_a, b_r, steps, chunks,
                                               barrier_counters())
            elif chunks > 1:
                k.gru_forward_rows_parallel(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, steps, chunks)
            else:
                k.gru_forward_rows(z, a, a0, z_rn, rec, w_a_packed, w_a_t, b_a, b_r, steps, 0, B)
        return a, (z, z_rn)

    def gru_backward_chain(self, d_a, d_a_n, a, a0, w_a, steps, chain_saved):
        """dZ_X, dZ_R (T, B, 3H) and dL/dA_0 (B, H) through the GRU chain."""
        k = self.kernels
        gates, z_rn = chain_saved
        T, B, H = a.shape
        dz_x, dz_r = k.empty(gates.shape, a.dtype), k.empty(gates.shape, a.dtype)
        carry = k.zeros((B, H), a.dtype)                                         # u ⊙ dL/dA_t, into dL/dA_{t-1}
        blas, chunks, columns = self._plan(T, B, H, 3, a.itemsize)
        if blas:
            d_next, product = recurrent_product(k, w_a.T, T, B, a.dtype)         # dZ_R,t+1·W_Aᵀ (B, H)
            for t in range(T - 1, -1, -1):
                k.gru_backward_step(dz_x[t], dz_r[t], carry, d_next, d_a[t], d_a_n, gates[t], z_rn[t],
                                    a0 if t == 0 else a[t - 1], steps, t, 0, B, 0, H)
                product(dz_r[t])
        else:
            d_next = k.zeros((B, H), a.dtype)
            w_a_t_packed = k.pack_columns(k.transposed(w_a))                     # W_Aᵀ (3H, H) by column vectors
            if columns:
                k.gru_backward_columns_parallel(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0,
                                                w_a_t_packed, steps, chunks, barrier_counters())
            elif chunks > 1:
                k.gru_backward_rows_parallel(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0,
                                             w_a_t_packed, w_a, steps, chunks)
            else:
                k.gru_backward_rows(dz_x, dz_r, carry, d_next, d_a, d_a_n, gates, z_rn, a, a0, w_a_t_packed, w_a,
                                    steps, 0, B)
        return dz_x, dz_r, carry + d_next                                        # dL/dA_0 (B, H)

    def lstm_forward_chain(self, z, a0, c0, w_a, b_a, b_r, steps):
        """The LSTM chain over z = X_t·W_X (T, B, 4H), z overwritten by the gates i, f, g, o -> (a, c_n, saved)."""
        k = self.kernels
        T, B, G = z.shape
        H = G // 4
        a, c = k.empty((T, B, H), z.dtype), k.empty((T, B, H), z.dtype)         # A_t, C_t (valid steps)
        bias = b_a + b_r                                                         # b_A + b_R (4H,)
        blas, chunks, columns = self._plan(T, B, H, 4, z.itemsize)
        if blas:
            rec, product = recurrent_product(k, w_a, T, B, z.dtype)              # A_{t-1}·W_A (B, 4H)
            for t in range(T):
                product(a0 if t == 0 else a[t - 1])
                k.lstm_step(z[t], a[t], c[t], c0 if t == 0 else c[t - 1], rec, bias, steps, t, 0, B, 0, H)
        else:
            rec = k.empty((B, G), z.dtype)
            w_a_packed, w_a_t = k.pack_for_tiles(w_a)                            # W_A by column vectors, W_Aᵀ
            if columns:
                k.lstm_forward_columns_parallel(z, a, c, a0, c0, rec, w_a_packed, bias, steps, chunks,
                                                barrier_counters())
            elif chunks > 1:
                k.lstm_forward_rows_parallel(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, steps, chunks)
            else:
                k.lstm_forward_rows(z, a, c, a0, c0, rec, w_a_packed, w_a_t, bias, steps, 0, B)
        c_n = c[steps - 1, np.arange(B)]                                         # C at each row's last step
        return a, c_n, (z, c)

    def lstm_backward_chain(self, d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, chain_saved):
        """dZ (T, B, 4H), twice (both sides of an LSTM gate), dL/dA_0 and dL/dC_0 (B, H) through the LSTM chain."""
        k = self.kernels
        gates, c = chain_saved
        T, B, H = a.shape
        dz = k.empty(gates.shape, a.dtype)
        carry_c = k.zeros((B, H), a.dtype)                                       # dL/dC_t arriving at step t
        blas, chunks, columns = self._plan(T, B, H, 4, a.itemsize)
        if blas:
            d_next, product = recurrent_product(k, w_a.T, T, B, a.dtype)         # dZ_t+1·W_Aᵀ (B, H)
            for t in range(T - 1, -1, -1):
                k.lstm_backward_step(dz[t], carry_c, d_next, d_a[t], d_a_n, d_c_n, gates[t], c[t],
                                      c0 if t == 0 else c[t - 1], steps, t, 0, B, 0, H)
                product(dz[t])
        else:
            d_next = k.zeros((B, H), a.dtype)
            w_a_t_packed = k.pack_columns(k.transposed(w_a))
            if columns:
                k.lstm_backward_columns_parallel(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed,
                                                 steps, chunks, barrier_counters())
            elif chunks > 1:
                k.lstm_backward_rows_parallel(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed,
                                               w_a, steps, chunks)
            else:
                k.lstm_backward_rows(dz, carry_c, d_next, d_a, d_a_n, d_c_n, gates, c, c0, w_a_t_packed, w_a,
                                      steps, 0, B)
        return dz, dz, np.ascontiguousarray(d_next), carry_c


def start_threads_on_own_openmp():
    """Start numba's thread pool on the OpenMP runtime numba links, when another one is already loaded.

    torch loads its own libgomp into the global symbol scope; numba's pool started after it binds to that runtime,
    whose wait policy was read when torch was imported, so its workers spin ~8 ms after every split call and
    idle_cores() counts them as a busy core (the next call then ran on one thread: LSTM H=256, B=32, T=64 forward
    25.8 ms against 16.2 ms). Loaded with RTLD_DEEPBIND, numba's OpenMP layer resolves its own libgomp first."""
    from numba.np.ufunc import parallel
    if parallel._is_initialized or not hasattr(os, "RTLD_DEEPBIND") or not _openmp_loaded():
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        parallel._launch_threads()
    finally:
        sys.setdlopenflags(flags)


def _openmp_loaded():
    """Whether an OpenMP runtime (GNU, LLVM or Intel) is mapped into this process (Linux; False elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            return any(name in line for line in maps for name in ("libgomp", "libomp", "libiomp"))
    except OSError:
        return False


def barrier_counters():
    """The shared counters of one call's barriers (kernels.barrier): 16 int64 zeros, arrivals and generation a
    cache line apart."""
    return np.zeros(16, dtype=np.int64)


def recurrent_product(kernels, w, T, B, dtype):
    """(out (B, N), product(p) writing p·w into out) for the per-step BLAS path; w (K, N) C-contiguous or a
    transpose of one (W_A forward, W_Aᵀ backward). A short call (SHORT_CALL_ROWS) multiplies by w as given,
    copying nothing. Otherwise, up to TRANSPOSED_PRODUCT_MAX_B rows BLAS writes wᵀ·pᵀ (N, B) and out is its
    transposed view; above, it reads a contiguous w (13-23 % faster than a transposed view)."""
    N = w.shape[1]
    if T * B * SHORT_CALL_ROWS < w.size:
        out = np.zeros((B, N), dtype=dtype)
        return out, lambda p: np.matmul(p, w, out=out)
    if B <= TRANSPOSED_PRODUCT_MAX_B:
        w_t, out_t = kernels.contiguous(w.T), np.zeros((N, B), dtype=dtype)
        return out_t.T, lambda p: np.matmul(w_t, p.T, out=out_t)
    w, out = kernels.contiguous(w), np.zeros((B, N), dtype=dtype)
    return out, lambda p: np.matmul(p, w, out=out)
