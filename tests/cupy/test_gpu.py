"""The cupy backend on a real CUDA device (skipped without one; perf/gpu_check.sh runs these on GPU nodes)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from rnnbackends_cupy.device import emulate_requested


def _real_device_reason():
    if emulate_requested():
        return "RNNBACKENDS_CUPY_EMULATE is set: these tests need the real device"
    from rnnbackends_cupy.backend import _availability

    ok, reason = _availability()
    return None if ok else reason


REASON = _real_device_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no usable CUDA device: {REASON}")


@pytest.mark.parametrize("path", ["auto", "persistent", "graph"])
def test_conformance_kit_on_device(path):
    """The kit passes on the GPU with the path chosen by shape, and with every shape forced onto each path."""
    env = {**os.environ, "RNNBACKENDS_TEST_BACKEND": "cupy", "RNNBACKENDS_CUPY_PATH": path}
    env.pop("RNNBACKENDS_CUPY_EMULATE", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                           "rnnbackends.testing"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def gpu():
    from rnnbackends_cupy.backend import CupyBackend

    return CupyBackend()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B, H", [(4, 1024), (8, 512), (64, 256), (2, 2048)])
def test_paths_agree_with_reference_at_device_sizes(gpu, dtype, B, H):
    """Both paths (persistent with > 48 KiB shared memory, graph) equal the reference at real sizes."""
    import cupy
    from rnnbackends_cupy import chain

    from rnnbackends.testing import make_case, reference, tolerance

    T, D = 20, 16
    lengths = np.maximum(1, T - np.arange(B) % T)
    arrays, lengths = make_case(T, B, D, H, dtype, lengths=lengths, seed=5)
    a_ref, _, saved_ref = reference().forward_sequence(*arrays, lengths=lengths)
    d_a = np.random.default_rng(6).standard_normal((T, B, H)).astype(dtype)
    grads_ref = reference().backward_sequence(saved_ref, d_a)
    for force in ("persistent", "graph"):
        os.environ["RNNBACKENDS_CUPY_PATH"] = force
        try:
            a, _, saved = gpu.forward_sequence(*map(cupy.asarray, arrays), lengths=lengths)
            grads = gpu.backward_sequence(saved, cupy.asarray(d_a))
        finally:
            del os.environ["RNNBACKENDS_CUPY_PATH"]
        tol = 10 * tolerance(dtype)
        np.testing.assert_allclose(a.get(), a_ref, rtol=tol, atol=tol, err_msg=f"a on {force}")
        for g, w in zip(grads, grads_ref):
            np.testing.assert_allclose(g.get(), w, rtol=tol, atol=tol * np.abs(w).max(), err_msg=force)
    assert gpu.device.persistent_error is None, gpu.device.persistent_error
    assert chain.choose_path(B, H, np.dtype(dtype).itemsize, gpu.device.limits, "persistent").kind in (
        "persistent", "graph")


def test_graph_path_is_captured(gpu):
    """The per-step loop runs as a captured CUDA graph (not the eager fallback)."""
    import cupy
    from rnnbackends_cupy import chain

    from rnnbackends.testing import make_case

    arrays, _ = make_case(10, 64, 8, 128, "float32")
    chain._plans.clear()
    os.environ["RNNBACKENDS_CUPY_PATH"] = "graph"
    try:
        gpu.forward_sequence(*map(cupy.asarray, arrays))
    finally:
        del os.environ["RNNBACKENDS_CUPY_PATH"]
    assert all(plan.graph is not None for plan in chain._plans.values())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_match_their_cpu_references_on_device(gpu, dtype):
    """persistent.cu and step.cu on the device == the reference chain (the same checks the emulator runs)."""
    import cupy
    from rnnbackends_cupy import chain

    from rnnbackends import reference

    T, B, H = 9, 3, 96
    rng = np.random.default_rng(7)
    zx = rng.standard_normal((T, B, H)).astype(dtype)
    a0 = rng.uniform(-0.5, 0.5, (B, H)).astype(dtype)
    w_a = (rng.uniform(-1, 1, (H, H)) / np.sqrt(H)).astype(dtype)
    lengths = np.array([9, 4, 1], dtype=np.int32)
    dev = gpu.device
    path = chain.choose_path(B, H, np.dtype(dtype).itemsize, dev.limits, force="persistent")
    d = [cupy.asarray(v) for v in (zx, a0, w_a, lengths)]
    a = chain.forward_persistent(dev, path, *d, 0)
    want = reference.rnn_forward_chain(zx, a0, w_a, np.zeros(H, dtype), lengths.astype(np.int64), "tanh")[0]
    np.testing.assert_allclose(a.get(), want, rtol=1e-4 if dtype == "float32" else 1e-11, atol=1e-5)
    a_g = chain.forward_graph(dev, *d, 0)
    np.testing.assert_allclose(a_g.get(), want, rtol=1e-4 if dtype == "float32" else 1e-11, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("B, H", [(4, 1024), (8, 512), (64, 256), (2, 2048)])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_paths_agree_with_reference_at_device_sizes(gpu, monkeypatch, cell, dtype, B, H):
    """GRU and LSTM chains on both paths (persistent where the G gates' slices fit on-chip, else graph) equal the
    reference chains at real sizes, with lengths and NaN in dL/dA's padding."""
    import cupy
    from rnnbackends_cupy import chain

    from rnnbackends import reference
    from rnnbackends.testing import tolerance
    from tests.cupy.test_emulator import _cell_inputs, _run_cell

    T = 20
    inputs = _cell_inputs(cell, T, B, H, dtype, np.maximum(1, T - np.arange(B) % T), seed=B + H)
    want = _run_cell(reference, cell, *inputs)
    on_device = [v if i == 6 else cupy.asarray(v) for i, v in enumerate(inputs)]  # lengths stay on the host
    tol = 10 * tolerance(dtype)
    for force in ("persistent", "graph"):
        monkeypatch.setenv("RNNBACKENDS_CUPY_PATH", force)
        got = _run_cell(gpu, cell, *on_device)
        for name, w in want.items():
            np.testing.assert_allclose(got[name].get(), w, rtol=tol, atol=tol * max(1.0, np.abs(w).max()),
                                       err_msg=f"{cell} {name} on {gpu.path(B, H, dtype, cell).kind} ({force})")
    assert gpu.device.persistent_error is None, gpu.device.persistent_error
    assert chain.choose_path(B, H, np.dtype(dtype).itemsize, gpu.device.limits, gates=chain.GATES[cell]).kind in (
        "persistent", "graph")
