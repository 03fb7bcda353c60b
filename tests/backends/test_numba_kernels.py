"""The numba backend's kernels: tanh accuracy, determinism, paths agreeing bit for bit, and a lazy numba import."""
import os
import subprocess
import sys

import numpy as np
import pytest
import rnnbackends_numba.backend as numba_backend

from rnnbackends.testing import make_case

kernels = pytest.importorskip("rnnbackends_numba.kernels", reason="numba is not installed")
jit_disabled = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") != "0",
                                  reason="with NUMBA_DISABLE_JIT=1 the kernels' tanh is np.tanh itself")

# Max relative error against tanh computed in float64 (the stated accuracy; measured 4.0e-16 and 1.3e-7).
TANH_MAX_RELATIVE_ERROR = {"float64": 5e-16, "float32": 1.5e-7}


def tanh_sample(dtype):
    """Dense and log-spaced points over both branches (|x| ≤ 0.625 and above) and saturation."""
    tiny = np.finfo(dtype).tiny
    ramp = np.geomspace(tiny, 30.0, 20_000)
    edge = np.linspace(0.6, 0.65, 2_001)
    x = np.concatenate([np.linspace(-25.0, 25.0, 100_001), ramp, -ramp, edge, -edge])
    return x.astype(dtype)


@jit_disabled
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tanh_accuracy(dtype):
    """The vectorisable tanh is within its stated relative error of the exact value everywhere."""
    x = tanh_sample(dtype)
    got = np.empty_like(x)
    kernels.tanh_into(x, got)
    exact = np.tanh(x.astype(np.float64))
    rel = np.abs(got.astype(np.float64) - exact) / np.maximum(np.abs(exact), np.finfo(dtype).tiny)
    assert rel.max() <= TANH_MAX_RELATIVE_ERROR[dtype], f"max error {rel.max():.3g} at x={x[rel.argmax()]!r}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tanh_special_values(dtype):
    """±0, ±inf saturate exactly and NaN stays NaN."""
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 40.0, -40.0], dtype=dtype)
    got = np.empty_like(x)
    kernels.tanh_into(x, got)
    np.testing.assert_array_equal(got[:4], [0.0, 0.0, 1.0, -1.0])
    assert np.isnan(got[4])
    np.testing.assert_array_equal(got[5:], [1.0, -1.0])


def run_paths(dtype, nonlinearity, monkeypatch, T=9, B=11, D=4, H=70):
    """Forward and backward of one case on the blocked path, serially and split across threads."""
    (x, a0, w_x, w_a, b_a), lengths = make_case(T, B, D, H, dtype, lengths=[9, 1, 4, 9, 2, 7, 9, 3, 5, 8, 6])
    d_a = np.random.default_rng(1).standard_normal((T, B, H)).astype(dtype)
    results = []
    monkeypatch.setattr(numba_backend, "BLAS_STEP_MIN_H", 10**9)         # the blocked kernels, whatever the shape
    monkeypatch.setattr(numba_backend, "BLAS_STEP_MIN_WORK_THREADED", 10**18)
    monkeypatch.setattr(numba_backend, "BLAS_STEP_MIN_WORK_WIDE", 10**18)
    monkeypatch.setattr(numba_backend.NumbaBackend, "blas_threads", lambda self: 1)   # rows split only then
    monkeypatch.setattr(numba_backend, "idle_cores", lambda: 2)                     # however busy the machine is
    for min_work in (10**18, 0):                                # serial, then rows split across threads
        monkeypatch.setattr(numba_backend, "PARALLEL_MIN_WORK", min_work)
        backend = numba_backend.NumbaBackend()
        a, a_n, saved = backend.forward_sequence(x, a0, w_x, w_a, b_a, lengths=lengths, nonlinearity=nonlinearity)
        results.append((a, a_n) + tuple(backend.backward_sequence(saved, d_a, a_n)))
    return results


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_thread_split_is_bit_identical_to_serial(dtype, nonlinearity, monkeypatch):
    """Rows are independent along the chain, so splitting them across threads changes no bit."""
    serial, split = run_paths(dtype, nonlinearity, monkeypatch)
    for s, p in zip(serial, split):
        np.testing.assert_array_equal(s, p)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_unit_split_is_bit_identical_to_serial(dtype, nonlinearity, monkeypatch):
    """With too few rows to split, the units are split across threads (one barrier per step): no bit changes."""
    import numba
    if numba.get_num_threads() < 2:
        pytest.skip("numba runs one thread here: nothing to split")
    T, B, D, H = 9, 3, 4, 48
    (x, a0, w_x, w_a, b_a), lengths = make_case(T, B, D, H, dtype, lengths=[9, 2, 6])
    d_a = np.random.default_rng(1).standard_normal((T, B, H)).astype(dtype)
    monkeypatch.setattr(numba_backend, "BLAS_STEP_MIN_H", 10**9)
    monkeypatch.setattr(numba_backend, "SHORT_CALL_ROWS", 10**9)                   # never a short call
    monkeypatch.setattr(numba_backend, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(numba_backend.NumbaBackend, "blas_threads", lambda self: 1)
    monkeypatch.setattr(numba_backend, "idle_cores", lambda: 2)
    results = []
    for min_work in (10**18, 0):                                # serial, then units split across threads
        monkeypatch.setattr(numba_backend, "COLUMNS_MIN_WORK", min_work)
        monkeypatch.setattr(numba_backend, "COLUMNS_MIN_CALL_WORK", min_work)
        backend = numba_backend.NumbaBackend()
        assert backend.path(T, B, H).endswith("by units") == (min_work == 0)
        a, a_n, saved = backend.forward_sequence(x, a0, w_x, w_a, b_a, lengths=lengths, nonlinearity=nonlinearity)
        results.append((a, a_n) + tuple(backend.backward_sequence(saved, d_a, a_n)))
    for s, p in zip(*results):
        np.testing.assert_array_equal(s, p)


def test_repeated_calls_are_bit_identical(monkeypatch):
    """The same inputs give the same bits, call after call, on every path."""
    first, second = run_paths("float32", "tanh", monkeypatch), run_paths("float32", "tanh", monkeypatch)
    for f, s in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(f, s)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_chain_arrays_start_on_a_cache_line(cell):
    """The packed weights, W_Aᵀ and the arrays the chain writes start on a 64-byte line (NumPy gives 16 bytes), so
    no tile load straddles two lines and no split across threads shares one; the values are unchanged."""
    import rnnbackends
    rng = np.random.default_rng(0)
    for shape in [(3, 5), (64, 8, 16)]:
        assert kernels.empty(shape, np.float32).ctypes.data % 64 == 0
        assert kernels.zeros(shape, np.float64).ctypes.data % 64 == 0 and not kernels.zeros(shape, np.float64).any()
    w = rng.standard_normal((40, 48)).astype(np.float32)
    packed, w_t = kernels.pack_for_tiles(w[:, :40])                 # 40 units: vectors and a remainder
    lanes = kernels.VECTOR_BYTES // 4
    assert packed.ctypes.data % 64 == 0 and w_t.ctypes.data % 64 == 0
    np.testing.assert_array_equal(w_t, w[:, :40].T)
    np.testing.assert_array_equal(packed[1], w[:, lanes:2 * lanes])
    backend = rnnbackends.get_backend("numba")
    G = {"rnn": 1, "lstm": 4}[cell]
    x, a0 = rng.standard_normal((6, 3, 8)).astype(np.float32), np.zeros((3, 16), np.float32)
    state0 = (a0, a0) if cell == "lstm" else a0
    a, _, _ = backend.forward_sequence(x, state0, rng.standard_normal((8, G * 16)).astype(np.float32),
                                       rng.standard_normal((16, G * 16)).astype(np.float32),
                                       np.zeros(G * 16, np.float32), cell=cell)
    assert a.ctypes.data % 64 == 0                                  # the simple cell's a is X·W_X's array itself

def test_probing_and_importing_do_not_import_numba():
    """`import rnnbackends` and listing the backends leave numba unimported (its compile cost lands on first use)."""
    code = ("import sys, rnnbackends; infos = {i.name: i for i in rnnbackends.list_backends()}; "
            "assert infos['numba'].available, infos['numba'].reason; assert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_per_step_blas_follows_the_blas_thread_count(monkeypatch):
    """Per-step BLAS from 2²⁴ multiply-adds per step (2²² with 32 rows) when BLAS has threads to split it; on
    one BLAS thread only from H=2048."""
    from threadpoolctl import threadpool_limits
    backend = numba_backend.NumbaBackend()
    with threadpool_limits(1, user_api="blas"):
        assert backend.blas_threads() == 1
        assert backend.path(256, 64, 1024).startswith("blocked") and backend.path(1024, 1, 2048) == "blas-step"
        assert backend.path(8, 1, 1024) == "blas-step"            # a short call: T·B·2¹³ < H², no copies of W_A
    monkeypatch.setattr(backend, "blas_threads", lambda: 2)
    assert backend.path(256, 16, 1024) == "blas-step" and backend.path(256, 8, 1024) == "blocked"
    assert backend.path(64, 32, 512) == "blas-step" and backend.path(64, 16, 512) == "blocked"
    assert backend.path(64, 32, 256) == "blocked"


def test_rows_split_across_threads_from_2_24_when_blas_has_one_thread(monkeypatch):
    """With BLAS on one thread (no idle BLAS workers to spin) rows are split from 2²⁴ multiply-adds per call, gates
    counted (below it waking the other thread costs more than the split saves); with BLAS threads, not at all."""
    import numba
    backend = numba_backend.NumbaBackend()
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(numba_backend, "idle_cores", lambda: 2)
    monkeypatch.setattr(backend, "blas_threads", lambda: 1)
    assert backend.path(64, 16, 128) == "blocked, 2 threads"                 # 64·16·128² = 2²⁴
    assert backend.path(32, 16, 128) == "blocked"                            # 2²³
    assert backend.path(64, 16, 128, "gru") == "blocked, 2 threads"          # 2²⁵·⁶
    assert backend.path(32, 16, 64, "lstm") == "blocked"                     # 2²³
    monkeypatch.setattr(backend, "blas_threads", lambda: 2)
    assert backend.path(64, 16, 128) == "blocked"


def test_one_row_splits_its_units_from_2_24_and_a_few_rows_from_2_25(monkeypatch):
    """A single row streams all of W_A each step, so its units are split across threads from half the call work
    that a few rows need (2²⁴ against 2²⁵ multiply-adds per call, gates counted)."""
    import numba
    backend = numba_backend.NumbaBackend()
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(numba_backend, "idle_cores", lambda: 2)
    monkeypatch.setattr(backend, "blas_threads", lambda: 1)
    monkeypatch.setattr(backend, "_barriers_safe", lambda: True)
    assert backend.path(96, 1, 512) == "blocked, 2 threads by units"         # 96·512² = 2²⁴·⁶
    assert backend.path(32, 1, 512) == "blocked"                             # 2²³
    assert backend.path(64, 1, 256, "lstm") == "blocked, 2 threads by units"  # 2²⁴
    rows = kernels.ROWS                                                      # one register block of rows
    assert backend.path(512 // rows, rows, 128, "gru") == "blocked"          # 2²⁴·⁶ with a few rows
    assert backend.path(1024 // rows, rows, 128, "gru") == "blocked, 2 threads by units"   # 2²⁵·⁶


@pytest.mark.parametrize("threads", [2, 3])
def test_split_gemms_equal_one_blas_call(threads, monkeypatch):
    """The GEMMs around the chain split across threads (rows of the result, or its columns when it is wider) give
    NumPy's product, into a given out or a new array, for every operand layout the chain host passes."""
    import numba
    from threadpoolctl import threadpool_limits
    backend = numba_backend.NumbaBackend()
    monkeypatch.setattr(numba_backend, "GEMM_SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(numba, "get_num_threads", lambda: threads)
    monkeypatch.setattr(numba_backend, "idle_cores", lambda: threads)
    rng = np.random.default_rng(0)
    x, w, dz = rng.standard_normal((45, 7)), rng.standard_normal((7, 30)), rng.standard_normal((45, 30))
    with threadpool_limits(1, user_api="blas"):
        out = np.empty((45, 30))
        assert backend.matmul(x, w, out=out) is out                                    # X·W_X, rows split
        np.testing.assert_allclose(out, x @ w, rtol=1e-13)
        np.testing.assert_allclose(backend.matmul(x.T, dz), x.T @ dz, rtol=1e-13)      # dW_X: columns split
        np.testing.assert_allclose(backend.matmul(dz, w.T), dz @ w.T, rtol=1e-13)      # dX, transposed operand


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_short_call_path_matches_the_blocked_kernels(nonlinearity, monkeypatch):
    """A short call's per-step BLAS against W_A as given (W_Aᵀ as a view in backward) gives the tiles' results."""
    (x, a0, w_x, w_a, b_a), lengths = make_case(3, 5, 4, 9, "float64", lengths=[3, 1, 2, 3, 2])
    d_a = np.random.default_rng(1).standard_normal((3, 5, 9))
    results = []
    for short_steps in (0, 10**9):                              # every call short, then none
        monkeypatch.setattr(numba_backend, "SHORT_CALL_ROWS", short_steps)
        backend = numba_backend.NumbaBackend()
        assert (backend.path(3, 5, 9) == "blas-step") == (short_steps == 0)
        a, a_n, saved = backend.forward_sequence(x, a0, w_x, w_a, b_a, lengths=lengths, nonlinearity=nonlinearity)
        results.append((a, a_n) + tuple(backend.backward_sequence(saved, d_a, a_n)))
    for short, blocked in zip(*results):
        np.testing.assert_allclose(short, blocked, rtol=1e-12, atol=1e-14)


SPINNING_WORKERS = r"""
import os, statistics, time
import torch  # noqa: F401  (first: its OpenMP runtime enters the global symbol scope)
import numpy as np
import rnnbackends
kernels = rnnbackends.get_backend("numba").impl.kernels
H, B, T = 128, 16, 64
rng = np.random.default_rng(0)
a, a0 = rng.standard_normal((T, B, H), dtype=np.float32), np.zeros((B, H), np.float32)
w_a = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(np.float32)
packed, w_a_t = kernels.pack_for_tiles(w_a)
steps = np.full(B, T, dtype=np.int64)

def running_threads():
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                count += stat.read().rsplit(")", 1)[1].split()[0] == "R"
        except OSError:
            pass
    return count

fractions = []
for _ in range(5):
    kernels.forward_rows_parallel(a.copy(), a0, packed, w_a_t, np.zeros(H, np.float32), steps, False, 2)
    start, samples = time.perf_counter(), []
    while time.perf_counter() - start < 0.01:
        samples.append(running_threads() > 1)
    fractions.append(sum(samples) / len(samples))
print(statistics.median(fractions))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads thread states from /proc")
def test_workers_sleep_after_a_split_call_when_torch_was_imported_first():
    """numba's OpenMP workers wait passively even when torch's OpenMP runtime was loaded first (bound to it, they
    spun ~8 ms after every split call and idle_cores() counted a busy core)."""
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_NUM_THREADS")}
    env["NUMBA_NUM_THREADS"] = "2"
    result = subprocess.run([sys.executable, "-c", SPINNING_WORKERS], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 0.4, f"a worker was running in {result.stdout.strip()} of the samples after the call"
