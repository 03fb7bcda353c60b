"""The numba backend's GRU and LSTM chains against the reference chains on every kernel path, its sigmoid's
accuracy, and bit-identical results across calls and thread splits."""
import os

import numpy as np
import pytest
import rnnbackends_numba.backend as numba_backend

from rnnbackends import reference

numba = pytest.importorskip("numba", reason="numba is not installed")
kernels = pytest.importorskip("rnnbackends_numba.kernels")
jit_disabled = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") != "0",
                                  reason="with NUMBA_DISABLE_JIT=1 the kernels' sigmoid is NumPy's formula")

# Max relative error against σ in long double where σ is a normal number (measured 3.5e-16 = 2.5 ulp and
# 1.8e-7 = 2.1 ulp; NumPy's own 1/(1 + exp(-x)) is within 2.6e-16 and 6.0e-8 of it). Below: absolute ≤ tiny.
SIGMOID_MAX_RELATIVE_ERROR = {"float64": 4e-16, "float32": 2e-7}
GATES = {"gru": 3, "lstm": 4}
TOLERANCE = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=2e-4, atol=2e-5)}

BLAS_NEVER = {"BLAS_STEP_MIN_H": 10**9, "BLAS_STEP_MIN_WORK_THREADED": 10**18, "BLAS_STEP_MIN_WORK_WIDE": 10**18}
SPLIT_NEVER = {"PARALLEL_MIN_WORK": 10**18}
PATHS = {"blocked": dict(BLAS_NEVER, **SPLIT_NEVER),
         "blocked-parallel": dict(BLAS_NEVER, PARALLEL_MIN_WORK=0),
         "blas-step": dict(SPLIT_NEVER, BLAS_STEP_MIN_H=0, TRANSPOSED_PRODUCT_MAX_B=0),
         "blas-step-transposed": dict(SPLIT_NEVER, BLAS_STEP_MIN_H=0, TRANSPOSED_PRODUCT_MAX_B=10**9),
         "blas-step-short": dict(SPLIT_NEVER, SHORT_CALL_ROWS=0),                # W_A as given, nothing copied
         "blocked-units": dict(BLAS_NEVER, PARALLEL_MIN_WORK=0, COLUMNS_MIN_WORK=0, COLUMNS_MIN_CALL_WORK=0,
                               SHORT_CALL_ROWS=10**9)}                           # few rows: the units split


def backend_on(path, monkeypatch):
    """A NumbaBackend whose thresholds send every shape down one kernel path."""
    for name, value in PATHS[path].items():
        monkeypatch.setattr(numba_backend, name, value)
    monkeypatch.setattr(numba_backend.NumbaBackend, "blas_threads", lambda self: 1)   # rows split only then
    monkeypatch.setattr(numba_backend, "idle_cores", lambda: 2)                     # however busy the machine is
    return numba_backend.NumbaBackend()


def chain_case(cell, T, B, H, lengths, dtype, seed=0):
    """z = X_t·W_X (T, B, G·H), a0, c0, w_a, b_a, b_r, upstream gradients (NaN in d_a on padding), steps."""
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(H)
    steps = np.asarray(lengths, dtype=np.int64)
    arrays = [rng.standard_normal((T, B, G * H)), rng.uniform(-0.5, 0.5, (B, H)), rng.uniform(-0.5, 0.5, (B, H)),
              rng.uniform(-bound, bound, (H, G * H)), rng.uniform(-bound, bound, G * H),
              rng.uniform(-bound, bound, G * H), rng.standard_normal((T, B, H)), rng.standard_normal((B, H)),
              rng.standard_normal((B, H))]
    z, a0, c0, w_a, b_a, b_r, d_a, d_a_n, d_c_n = (v.astype(dtype) for v in arrays)
    d_a[np.arange(T)[:, None] >= steps[None, :]] = np.nan                   # never read on padding
    return z, a0, c0, w_a, b_a, b_r, d_a, d_a_n, d_c_n, steps


def run_chains(module, cell, z, a0, c0, w_a, b_a, b_r, d_a, d_a_n, d_c_n, steps):
    """Forward and backward chains of a backend (or the reference module): every output in a flat list."""
    z = z.copy()                                                             # the forward may overwrite z
    if cell == "gru":
        a, saved = module.gru_forward_chain(z, a0, w_a, b_a, b_r, steps)
        return [a] + list(module.gru_backward_chain(d_a.copy(), d_a_n, a, a0, w_a, steps, saved))
    a, c_n, saved = module.lstm_forward_chain(z, a0, c0, w_a, b_a, b_r, steps)
    return [a, c_n] + list(module.lstm_backward_chain(d_a.copy(), d_a_n, d_c_n, a, a0, c0, w_a, steps, saved))


CASES = {"lengths": (7, 11, 40, [7, 1, 4, 7, 2, 7, 7, 3, 5, 6, 6]),   # 3H, 4H: full vectors and a remainder
         "B=1 H=1": (3, 1, 1, [3]), "T=1": (1, 5, 6, [1, 1, 1, 1, 1])}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_chains_match_the_reference(case, cell, dtype, path, monkeypatch):
    """A (C_n), dZ_X, dZ_R, dA_0 (dC_0) equal the reference chains' on every path, and padding holds zeros."""
    T, B, H, lengths = CASES[case]
    args = chain_case(cell, T, B, H, lengths, dtype, seed=T + H)
    got = run_chains(backend_on(path, monkeypatch), cell, *args)
    want = run_chains(reference, cell, *args)
    assert [g.shape for g in got] == [w.shape for w in want]
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.dtype(dtype)
        assert np.all(np.isfinite(g)), f"output {i} is not finite"
        np.testing.assert_allclose(g, w, **TOLERANCE[dtype], err_msg=f"output {i}")
    padding = np.arange(T)[:, None] >= args[-1][None, :]
    for padded in (got[0], got[-3 if cell == "gru" else -4]):                # A and dZ_X are 0 on padding
        assert not padded[padding].any()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_thread_split_and_repeated_calls_are_bit_identical(cell, dtype, monkeypatch):
    """Rows split across threads and a second call change no bit."""
    args = chain_case(cell, 9, 19, 24, [9, 1, 4, 9, 2, 7, 9, 3, 5, 8, 6, 9, 9, 2, 1, 9, 4, 4, 7], dtype, seed=3)
    serial = run_chains(backend_on("blocked", monkeypatch), cell, *args)
    split_backend = backend_on("blocked-parallel", monkeypatch)
    assert numba.get_num_threads() == 1 or split_backend.path(9, 19, 24, cell).endswith("threads")
    for _ in range(2):
        for s, p in zip(serial, run_chains(split_backend, cell, *args)):
            np.testing.assert_array_equal(s, p)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_unit_split_matches_the_reference_bit_for_bit_with_one_thread(cell, dtype, monkeypatch):
    """Three rows (too few to split) share their units across threads, one barrier per step: equal to the
    reference, and bit for bit to one thread, call after call."""
    if numba.get_num_threads() < 2:
        pytest.skip("numba runs one thread here: nothing to split")
    args = chain_case(cell, 9, 3, 48, [9, 2, 6], dtype, seed=5)
    serial = run_chains(backend_on("blocked", monkeypatch), cell, *args)
    units_backend = backend_on("blocked-units", monkeypatch)
    assert units_backend.path(9, 3, 48, cell).endswith("by units")
    for s, r in zip(serial, run_chains(reference, cell, *args)):
        np.testing.assert_allclose(s, r, **TOLERANCE[dtype])
    for _ in range(2):
        for s, p in zip(serial, run_chains(units_backend, cell, *args)):
            np.testing.assert_array_equal(s, p)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_capabilities_and_paths_name_the_cells(cell, monkeypatch):
    """The backend declares the three cells; a gated cell counts its G gates' work in the path choice."""
    backend = numba_backend.NumbaBackend()
    assert {"rnn", "gru", "lstm"} <= backend.capabilities
    assert backend.path(1000, 1, 1200, cell) == "blas-step"                 # G·H² ≥ 2048²
    assert backend.path(1000, 1, 1200, "rnn") != "blas-step"
    assert backend.path(1, 1, 64, cell) == "blas-step" and backend.path(1, 1, 64, "rnn") != "blas-step"  # short
    monkeypatch.setattr(backend, "blas_threads", lambda: 2)
    assert backend.path(64, 32, 256, cell) == "blas-step" and backend.path(64, 32, 256, "rnn") == "blocked"


def sigmoid_sample(dtype):
    """Dense points over the gates' range, log-spaced ones out to where σ leaves the normal numbers, and beyond."""
    tiny = np.finfo(dtype).tiny
    ramp = np.geomspace(tiny, 800.0 if dtype == "float64" else 100.0, 20_000)
    return np.concatenate([np.linspace(-40.0, 40.0, 100_001), ramp, -ramp]).astype(dtype)


@jit_disabled
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_accuracy(dtype):
    """The vectorisable σ is within its stated relative error of σ in long double wherever σ is normal."""
    x = sigmoid_sample(dtype)
    got = np.empty_like(x)
    kernels.sigmoid_into(x, got)
    exact = 1 / (1 + np.exp(-x.astype(np.longdouble)))
    tiny = np.finfo(dtype).tiny
    normal = exact >= tiny
    error = np.abs(got.astype(np.longdouble) - exact)
    rel = error[normal] / exact[normal]
    assert rel.max() <= SIGMOID_MAX_RELATIVE_ERROR[dtype], f"max error {rel.max():.3g} at x={x[normal][rel.argmax()]!r}"
    assert error[~normal].max() <= tiny


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigmoid_special_values(dtype):
    """±0 give 0.5, ±inf and far tails saturate exactly, NaN stays NaN."""
    x = np.array([0.0, -0.0, np.inf, -np.inf, 1000.0, -1000.0, np.nan], dtype=dtype)
    got = np.empty_like(x)
    kernels.sigmoid_into(x, got)
    np.testing.assert_array_equal(got[:6], [0.5, 0.5, 1.0, 0.0, 1.0, 0.0])
    assert np.isnan(got[6])
