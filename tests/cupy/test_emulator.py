"""The CUDA kernels on the CPU emulator: each A-chain path against the reference chain, and the emulator's checks.

Needs only g++ (skips with the reason otherwise). The emulated device's limits are small (emulation
EMULATED_LIMITS) so these shapes run several blocks and both A-chain paths.
"""
import numpy as np
import pytest
from rnnbackends_cupy import chain
from rnnbackends_cupy.emulation import EmulatorError, compiler

from rnnbackends import reference

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++) for the CUDA emulator")

TOL = {"float32": 2e-5, "float64": 1e-12}


def _device(*defines):
    from rnnbackends_cupy.emulation import EmulatedDevice

    return EmulatedDevice(defines=defines)


def _inputs(T, B, H, dtype, seed=0, lengths=None):
    rng = np.random.default_rng(seed)
    zx = rng.standard_normal((T, B, H)).astype(dtype)
    a0 = rng.uniform(-0.5, 0.5, (B, H)).astype(dtype)
    w_a = (rng.uniform(-1, 1, (H, H)) / np.sqrt(H)).astype(dtype)
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    return zx, a0, w_a, lengths.astype(np.int32)


def reference_forward(zx, a0, w_a, lengths, relu):
    """The reference chain on ZX = X·W_X + b_A -> A (T, B, H)."""
    bias = np.zeros(zx.shape[2], zx.dtype)                       # b_A is already in ZX
    return reference.rnn_forward_chain(zx, a0, w_a, bias, lengths.astype(np.int64), "relu" if relu else "tanh")[0]


def reference_backward(d_a, d_a_n, a, w_a, lengths, relu):
    """The reference backward chain -> (dZ (T, B, H), dA_0 (B, H))."""
    return reference.rnn_backward_chain(d_a, d_a_n, a, w_a, lengths.astype(np.int64), "relu" if relu else "tanh")


def _close(got, want, dtype):
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("relu", [0, 1])
def test_step_kernels_match_reference(dtype, relu):
    """The graph path (per-step GEMM + rnn_forward_step / rnn_backward_step) == the reference chain, over several
    blocks of the step kernels (B·H > 256), with NaN in the padding of dL/dA (never read)."""
    dev = _device()
    T, B, H = 9, 9, 40
    zx, a0, w_a, lengths = _inputs(T, B, H, dtype, seed=1, lengths=[5, 1, 4, 3, 9, 4, 2, 7, 6])
    a = chain.forward_graph(dev, zx, a0, w_a, lengths, relu)
    _close(a, reference_forward(zx, a0, w_a, lengths, relu), dtype)
    rng = np.random.default_rng(2)
    d_a, d_a_n = rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    d_a[np.arange(T)[:, None] >= lengths[None, :]] = np.nan
    dz, d_a0 = chain.backward_graph(dev, d_a, d_a_n, a, w_a, lengths, relu)
    want_dz, want_d_a0 = reference_backward(d_a, d_a_n, a, w_a, lengths, relu)
    _close(dz, want_dz, dtype)
    _close(d_a0, want_d_a0, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B, H", [(1, 1), (3, 8), (5, 33), (4, 64)])
def test_persistent_kernels_match_reference(dtype, B, H):
    """rnn_forward_persistent / rnn_backward_persistent == the reference chain, on a grid of several blocks."""
    dev = _device()
    T = 7
    zx, a0, w_a, lengths = _inputs(T, B, H, dtype, lengths=np.minimum(np.arange(B) * 3 + 1, T))
    path = chain.choose_path(B, H, np.dtype(dtype).itemsize, dev.limits, force="persistent")
    assert path.kind == "persistent" and path.blocks == min(4, H)
    for relu in (0, 1):
        a = chain.forward_persistent(dev, path, zx, a0, w_a, lengths, relu)
        _close(a, reference_forward(zx, a0, w_a, lengths, relu), dtype)
        rng = np.random.default_rng(2)
        d_a, d_a_n = rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
        dz, d_a0 = chain.backward_persistent(dev, path, d_a, d_a_n, a, w_a, lengths, relu)
        want_dz, want_d_a0 = reference_backward(d_a, d_a_n, a, w_a, lengths, relu)
        _close(dz, want_dz, dtype)
        _close(d_a0, want_d_a0, dtype)


def test_graph_path_matches_persistent_path_bit_for_bit_in_float64_reference():
    """Both A-chain paths agree with the reference (and with each other) on one shape."""
    dev = _device()
    zx, a0, w_a, lengths = _inputs(6, 3, 12, "float64", lengths=[6, 2, 4])
    path = chain.choose_path(3, 12, 8, dev.limits, force="persistent")
    a_p = chain.forward_persistent(dev, path, zx, a0, w_a, lengths, 0)
    a_g = chain.forward_graph(dev, zx, a0, w_a, lengths, 0)
    _close(a_g, a_p, "float64")


def test_persistent_results_do_not_depend_on_the_interleaving():
    """Different fiber schedules (seeds) give the same bits: the kernels have no races."""
    from rnnbackends_cupy.emulation.library import Library, build

    zx, a0, w_a, lengths = _inputs(5, 3, 16, "float32", lengths=[5, 2, 3])
    path = chain.choose_path(3, 16, 4, _device().limits, force="persistent")
    results = []
    for seed in (1, 2, 3):
        lib = Library(build(()), seed=seed)
        a = np.empty_like(zx)
        lib.launch("rnn_forward_persistent<float>", (path.blocks,), (path.threads,),
                   (zx, a0, w_a, lengths, a, *map(np.int32, (5, 3, 16, path.cols, 0))), path.shared_bytes, True)
        results.append(a)
    assert all(np.array_equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("macro", ["RNNB_EMULATE_WITHOUT_SYNCTHREADS", "RNNB_EMULATE_WITHOUT_GRID_SYNC"])
def test_emulator_catches_a_removed_barrier(macro):
    """persistent.cu emulated without its __syncthreads, or with its grid sync reduced to a block barrier, is wrong."""
    dev = _device(macro)
    zx, a0, w_a, lengths = _inputs(6, 3, 16, "float64", lengths=[6, 2, 5])
    path = chain.choose_path(3, 16, 8, dev.limits, force="persistent")
    want = reference_forward(zx, a0, w_a, lengths, 0)
    wrong = 0
    for _ in range(3):  # three launches, three interleavings
        a = chain.forward_persistent(dev, path, zx, a0, w_a, lengths, 0)
        wrong += not np.allclose(a, want, rtol=1e-12, atol=1e-12, equal_nan=False)
    assert wrong == 3, f"the emulator missed the removed barrier ({macro}) in {3 - wrong} of 3 launches"


def test_selftest_reverse_needs_its_barrier():
    """The smallest case: a block reversing through shared memory is right with the barrier, wrong without."""
    lib = _device().library
    x = np.arange(128, dtype=np.float32)
    out = np.empty_like(x)
    lib.launch("selftest_reverse<float>", (2,), (64,), (x, out, np.int32(0)), 64 * 4)
    assert np.array_equal(out, np.concatenate([x[:64][::-1], x[64:][::-1]]))
    lib.launch("selftest_reverse<float>", (2,), (64,), (x, out, np.int32(1)), 64 * 4)
    assert not np.array_equal(out, np.concatenate([x[:64][::-1], x[64:][::-1]]))


def test_barrier_divergence_is_an_error_not_a_hang():
    """Threads that skip a __syncthreads others wait at are reported, naming the kernel."""
    lib = _device().library
    out = np.zeros(64, dtype=np.float32)
    with pytest.raises(EmulatorError, match="selftest_divergent<float>.*barrier divergence"):
        lib.launch("selftest_divergent<float>", (1,), (64,), (out, np.int32(5)))
    lib.launch("selftest_divergent<float>", (1,), (64,), (out, np.int32(0)))  # no early exit: fine
    assert np.all(out == 1)


def test_shuffles_at_different_lines_are_divergence():
    """Lanes of one warp in different full-mask shuffles are reported, not silently paired."""
    lib = _device().library
    with pytest.raises(EmulatorError, match="different shuffles"):
        lib.launch("selftest_divergent_shuffle<float>", (1,), (32,), (np.zeros(32, np.float32),))


def test_warp_shuffle_sum():
    """__shfl_xor_sync through the emulated warp exchange sums each warp."""
    lib = _device().library
    x = np.random.default_rng(3).standard_normal(256)
    out = np.empty(8)
    lib.launch("selftest_warp_sum<double>", (2,), (128,), (x, out))
    np.testing.assert_allclose(out, x.reshape(8, 32).sum(axis=1), rtol=1e-13)


def test_launch_errors_are_clear():
    """Wrong argument count or size, and grid_sync outside a cooperative launch, raise EmulatorError."""
    lib = _device().library
    out = np.zeros(64, dtype=np.float32)
    with pytest.raises(EmulatorError, match="1 arguments given, the kernel takes 2"):
        lib.launch("selftest_divergent<float>", (1,), (64,), (out,))
    with pytest.raises(EmulatorError, match="bytes"):
        lib.launch("selftest_divergent<float>", (1,), (64,), (out, np.int64(0)))
    with pytest.raises(EmulatorError, match="no kernel named"):
        lib.launch("nope<float>", (1,), (32,), ())
    zx, a0, w_a, lengths = _inputs(2, 1, 4, "float32")
    with pytest.raises(EmulatorError, match="not cooperative"):
        lib.launch("rnn_forward_persistent<float>", (1,), (32,),
                   (zx, a0, w_a, lengths, np.empty_like(zx), *map(np.int32, (2, 1, 4, 4, 0))), 4096, False)


def test_path_choice_by_shape_and_limits():
    """Small B and on-chip W_A slices: persistent; large B, too little shared memory or no coop: graph."""
    from rnnbackends_cupy.emulation import EMULATED_LIMITS as lim

    assert chain.choose_path(4, 16, 8, lim, force="auto").kind == "persistent"
    assert chain.choose_path(5, 16, 8, lim, force="auto").kind == "graph"
    assert chain.choose_path(2, 256, 4, lim, force="auto").kind == "graph"  # (64 + 2)·256·4 B > 48 KiB
    assert chain.choose_path(2, 16, 8, lim._replace(cooperative=False), force="persistent").kind == "graph"
    h100 = lim._replace(blocks=132, shared_bytes=227 * 1024, threads=256, persistent_max_batch=32)
    p = chain.choose_path(4, 1024, 4, h100, force="auto")
    assert (p.kind, p.blocks, p.cols, p.threads) == ("persistent", 128, 8, 256)
    assert chain.choose_path(64, 1024, 4, h100, force="auto").kind == "graph"
    assert chain.choose_path(32, 2048, 4, h100, force="auto").kind == "graph"  # does not fit on-chip
    assert chain.choose_path(1, 256, 4, h100, force="auto").blocks == 32  # ≥ one item per warp: 8 columns


def test_graph_plans_are_reused():
    """The per-step loop is captured once per shape and replayed (the emulated 'graph' records launches)."""
    dev = _device()
    zx, a0, w_a, lengths = _inputs(4, 6, 8, "float32")
    chain._plans.clear()
    first = chain.forward_graph(dev, zx, a0, w_a, lengths, 0)
    plan = next(iter(chain._plans.values()))
    assert plan.graph is not None and len(plan.graph.ops) == 2 * 4  # T × (GEMM + kernel)
    again = chain.forward_graph(dev, zx * 0.5, a0, w_a, lengths, 0)
    assert len(chain._plans) == 1 and not np.array_equal(first, again)
    _close(again, reference_forward(zx * 0.5, a0, w_a, lengths, 0), "float32")


# -- the gated cells (gated_persistent.cu, gated_step.cu) against the reference chains ----------------------------
def _cell_inputs(cell, T, B, H, dtype, lengths, seed=0):
    """z = X_t·W_X (T, B, G·H), A_0, C_0, W_A (H, G·H), b_A, b_R, lengths (int64) and upstream gradients with NaN
    on the padding of dL/dA (never read)."""
    G = chain.GATES[cell]
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((T, B, G * H)).astype(dtype)
    a0, c0 = (rng.uniform(-0.5, 0.5, (B, H)).astype(dtype) for _ in range(2))
    w_a = (rng.uniform(-1, 1, (H, G * H)) / np.sqrt(H)).astype(dtype)
    b_a, b_r = (rng.uniform(-0.3, 0.3, G * H).astype(dtype) for _ in range(2))
    lengths = np.asarray(lengths, dtype=np.int64)
    d_a = rng.standard_normal((T, B, H)).astype(dtype)
    d_a[np.arange(T)[:, None] >= lengths[None, :]] = np.nan
    d_a_n, d_c_n = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    return z, a0, c0, w_a, b_a, b_r, lengths, d_a, d_a_n, d_c_n


def _run_cell(be, cell, z, a0, c0, w_a, b_a, b_r, lengths, d_a, d_a_n, d_c_n):
    """Forward and backward chain of `cell` on backend (or module) `be` -> {name: array}."""
    if cell == "gru":
        a, saved = be.gru_forward_chain(z.copy(), a0, w_a, b_a, b_r, lengths)
        dz_x, dz_r, d_a0 = be.gru_backward_chain(d_a, d_a_n, a, a0, w_a, lengths, saved)
        return {"a": a, "dz_x": dz_x, "dz_r": dz_r, "d_a0": d_a0}
    a, c_n, saved = be.lstm_forward_chain(z.copy(), a0, c0, w_a, b_a, b_r, lengths)
    dz_x, dz_r, d_a0, d_c0 = be.lstm_backward_chain(d_a, d_a_n, d_c_n, a, a0, c0, w_a, lengths, saved)
    return {"a": a, "c_n": c_n, "dz_x": dz_x, "dz_r": dz_r, "d_a0": d_a0, "d_c0": d_c0}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B, H, kind", [(1, 1, "persistent"), (3, 10, "persistent"), (4, 33, "persistent"),
                                        (6, 10, "graph"), (9, 40, "graph")])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_chains_match_reference(monkeypatch, cell, B, H, kind, dtype):
    """gru_/lstm_ forward and backward chains on each path (several blocks: 4 persistent blocks, B·H > 256 step
    threads) == rnnbackends.reference's, with the state frozen past each length and NaN in d_a's padding."""
    from rnnbackends_cupy.backend import CupyBackend

    from rnnbackends import reference

    monkeypatch.setenv("RNNBACKENDS_CUPY_PATH", "auto")
    be = CupyBackend(device=_device())
    T = 7
    lengths = np.minimum(np.arange(B) * 3 % T + 1, T)
    lengths[0] = T
    path = be.path(B, H, dtype, cell)
    assert path.kind == kind and (kind == "graph" or path.blocks == min(4, H)), path
    inputs = _cell_inputs(cell, T, B, H, dtype, lengths, seed=B * H)
    got, want = _run_cell(be, cell, *inputs), _run_cell(reference, cell, *inputs)
    for name in want:
        assert got[name].dtype == np.dtype(dtype), name
        np.testing.assert_allclose(got[name], want[name], rtol=10 * TOL[dtype], atol=10 * TOL[dtype], err_msg=name)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_paths_agree(monkeypatch, cell):
    """The persistent and the graph path give the same answer on one shape (float64)."""
    from rnnbackends_cupy.backend import CupyBackend

    be = CupyBackend(device=_device())
    inputs = _cell_inputs(cell, 6, 3, 12, "float64", [6, 2, 4], seed=5)
    results = {}
    for force in ("persistent", "graph"):
        monkeypatch.setenv("RNNBACKENDS_CUPY_PATH", force)
        assert be.path(3, 12, "float64", cell).kind == force
        results[force] = _run_cell(be, cell, *inputs)
    for name, value in results["persistent"].items():
        _close(value, results["graph"][name], "float64")


@pytest.mark.parametrize("kernel", ["gru_forward_persistent", "lstm_backward_persistent"])
def test_gated_persistent_results_do_not_depend_on_the_interleaving(kernel):
    """Different fiber schedules give the same bits for the gated persistent kernels (no races, no atomics)."""
    from rnnbackends_cupy.emulation.library import Library, build

    cell = kernel.split("_")[0]
    T, B, H = 5, 3, 16
    z, a0, c0, w_a, b_a, b_r, lengths, d_a, d_a_n, d_c_n = _cell_inputs(cell, T, B, H, "float32", [5, 2, 3])
    lens = lengths.astype(np.int32)
    path = chain.choose_path(B, H, 4, _device().limits, force="persistent", gates=chain.GATES[cell])
    assert path.blocks == 4
    dims = tuple(map(np.int32, (T, B, H, path.cols)))
    results = []
    for seed in (1, 2, 3):
        lib = Library(build(()), seed=seed)
        if kernel == "gru_forward_persistent":
            outs = (np.zeros((T, B, H), np.float32), np.zeros((T, B, 4 * H), np.float32))  # saved: padding unwritten
            args = (z, a0, w_a, b_r, lens, *outs)
        else:
            c, gates = np.full((T, B, H), 0.5, np.float32), np.full((T, B, 4 * H), 0.25, np.float32)
            outs = (np.zeros((T, B, 4 * H), np.float32), np.zeros((B, H), np.float32), np.zeros((B, H), np.float32))
            args = (np.nan_to_num(d_a), d_a_n, d_c_n, c, c0, w_a, gates, lens, *outs)
        lib.launch(f"{kernel}<float>", (path.blocks,), (path.threads,), (*args, *dims), path.shared_bytes, True)
        results.append(outs)
    assert all(np.array_equal(x, y) for r in results[1:] for x, y in zip(results[0], r))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_emulator_catches_a_removed_grid_sync_in_the_gated_kernels(cell):
    """The gated persistent forward with its grid sync reduced to a block barrier is wrong (the emulator sees it)."""
    from rnnbackends_cupy.backend import CupyBackend

    from rnnbackends import reference

    be = CupyBackend(device=_device("RNNB_EMULATE_WITHOUT_GRID_SYNC"))
    z, a0, c0, w_a, b_a, b_r, lengths, *_ = _cell_inputs(cell, 6, 3, 16, "float64", [6, 2, 5])
    assert be.path(3, 16, "float64", cell).kind == "persistent"
    if cell == "gru":
        run = lambda m: m.gru_forward_chain(z.copy(), a0, w_a, b_a, b_r, lengths)[0]  # noqa: E731
    else:
        run = lambda m: m.lstm_forward_chain(z.copy(), a0, c0, w_a, b_a, b_r, lengths)[0]  # noqa: E731
    assert not np.allclose(run(be), run(reference), rtol=1e-12, atol=1e-12)


def test_path_choice_counts_every_gate():
    """Shared memory grows by G: a shape that fits for the simple cell may not for the LSTM's four W_A slices."""
    from rnnbackends_cupy.emulation import EMULATED_LIMITS as lim

    rnn, gru, lstm = (chain.choose_path(4, 64, 8, lim, gates=g) for g in (1, 3, 4))
    assert gru.shared_bytes == 3 * rnn.shared_bytes and lstm.shared_bytes == 4 * rnn.shared_bytes
    assert (rnn.kind, lstm.kind) == ("persistent", "persistent")       # 4·(16 + 4)·64·8 B = 40 KiB ≤ 48 KiB
    assert chain.choose_path(4, 80, 8, lim, gates=4).kind == "graph"   # 4·(20 + 4)·80·8 B = 60 KiB
    assert chain.choose_path(4, 80, 8, lim, gates=1).kind == "persistent"
