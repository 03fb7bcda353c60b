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
    assert chain.choose_path(2, 256, 4, lim, force="auto").kind == "graph"  # 64·256·4 B > 16 KiB
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
