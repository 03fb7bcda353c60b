"""The GPU-only host code (device.CudaDevice: RawModule, cooperative launch, >48 KiB opt-in, graph capture)
run against a stand-in `cupy` module: NumPy arrays, kernels through the emulator, capture by recording.

It proves the Python around the real device has no typos and calls CuPy's API as documented; the real
thing is checked by tests/test_cupy_gpu.py on a GPU node.
"""
import argparse
import sys
import time
import types

import numpy as np
import pytest
from rnnbackends_cupy.emulation import compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C++ compiler (g++) for the CUDA emulator")


def _fake_cupy(calls):
    from rnnbackends_cupy.emulation import library

    lib = library(())
    cp = types.ModuleType("cupy")
    for name in ("asarray", "empty", "empty_like", "zeros", "zeros_like", "ones", "ones_like", "arange", "concatenate",
                 "full", "int32", "float32", "float64", "ndarray", "where", "isfinite"):
        setattr(cp, name, getattr(np, name))
    cp.__version__ = "0-fake"
    state = {"capturing": None}

    def run(op):
        (state["capturing"].append if state["capturing"] is not None else lambda f: f())(op)

    def matmul(a, b, out=None):
        assert out is not None
        calls.append("gemm")
        run(lambda: np.matmul(a, b, out=out))

    cp.matmul = matmul

    class RawKernel:
        def __init__(self, name, cooperative):
            self.name, self.cooperative, self.max_dynamic_shared_size_bytes = name, cooperative, 48 * 1024

        def __call__(self, grid, block, args, shared_mem=0):
            assert isinstance(grid, tuple) and isinstance(block, tuple)
            assert shared_mem <= self.max_dynamic_shared_size_bytes, "opt-in missing for > 48 KiB"
            calls.append(self.name)
            run(lambda: lib.launch(self.name, grid, block, args, shared_mem, self.cooperative))

    class RawModule:
        def __init__(self, code, options=(), name_expressions=(), enable_cooperative_groups=False):
            assert '#include "' not in code, "local headers must be inlined"
            assert "rnnb::grid_sync" in code or not enable_cooperative_groups
            self.names, self.coop = list(name_expressions), enable_cooperative_groups

        def get_function(self, name):
            assert name in self.names and name in lib.kernel_names(), name
            return RawKernel(name, self.coop)

    cp.RawModule = RawModule

    class Graph:
        def __init__(self, ops):
            self.ops = ops

        def launch(self, stream=None):
            calls.append("graph")
            for op in self.ops:
                op()

    class Stream:
        def __init__(self, non_blocking=False):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def begin_capture(self, mode=None):
            state["capturing"] = []

        def end_capture(self):
            ops, state["capturing"] = state["capturing"], None
            return Graph(ops)

        def synchronize(self):
            pass

    class Device:
        def __init__(self, i=0):
            self.id = i

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

    props = {"name": b"Fake H100", "major": 9, "minor": 0, "multiProcessorCount": 4,
             "sharedMemPerBlockOptin": 227 * 1024, "sharedMemPerBlock": 48 * 1024, "cooperativeLaunch": 1}
    class Event:
        def record(self, stream=None):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    cp.random = types.SimpleNamespace(standard_normal=np.random.standard_normal)
    cp.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)
    cp.cuda = types.SimpleNamespace(
        Device=Device, Stream=Stream, get_current_stream=lambda: Stream(), Event=Event,
        get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: props, getDeviceCount=lambda: 1,
                                      driverGetVersion=lambda: 12040, runtimeGetVersion=lambda: 12040))
    return cp


@pytest.fixture
def fake(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(calls))
    monkeypatch.delenv("RNNBACKENDS_CUPY_EMULATE", raising=False)
    from rnnbackends_cupy import chain, device

    device._cuda.cache_clear()
    chain._plans.clear()
    yield calls
    device._cuda.cache_clear()
    chain._plans.clear()


@pytest.mark.parametrize("B, H, dtype, kind", [(3, 40, "float64", "persistent"), (2, 96, "float64", "persistent"),
                                                (40, 16, "float32", "graph")])
def test_cuda_device_host_code(fake, B, H, dtype, kind):
    """CudaDevice + CupyBackend through the fake cupy: right answers, right path, graph captured once."""
    from rnnbackends_cupy import chain
    from rnnbackends_cupy.backend import CupyBackend, _availability
    from rnnbackends_cupy.device import CudaDevice, get_device

    from rnnbackends.testing import make_case, reference

    ok, reason = _availability()
    assert ok and "Fake H100" in reason
    dev = get_device()
    assert isinstance(dev, CudaDevice) and dev.limits.persistent_max_batch == 32
    be = CupyBackend()
    assert be.path(B, H, dtype).kind == kind
    lengths = np.minimum(np.arange(B) + 1, 6)
    arrays, lengths = make_case(6, B, 3, H, dtype, lengths=lengths, seed=1)
    d_a = np.random.default_rng(2).standard_normal((6, B, H)).astype(dtype)
    ref = reference()
    want_a, _, saved_ref = ref.forward_sequence(*arrays, lengths=lengths)
    want = ref.backward_sequence(saved_ref, d_a)
    for _ in range(2):
        a, _, saved = be.forward_sequence(*arrays, lengths=lengths)
        got = be.backward_sequence(saved, d_a)
        np.testing.assert_allclose(a, want_a, rtol=1e-4, atol=1e-5)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    if kind == "graph":
        assert fake.count("graph") == 4  # forward and backward, each replayed twice
        assert all(p.graph is not None for p in chain._plans.values())
    else:
        assert "rnn_forward_persistent<%s>" % ("double" if dtype == "float64" else "float") in fake


@pytest.mark.parametrize("B, H, dtype, kind", [(3, 40, "float64", "persistent"), (40, 16, "float32", "graph")])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cuda_device_gated_cells(fake, cell, B, H, dtype, kind):
    """The gated chains through CudaDevice and the fake cupy: gated_persistent.cu / gated_step.cu modules by their
    name expressions, the graph captured and replayed, answers equal to the reference chains."""
    from rnnbackends_cupy import chain
    from rnnbackends_cupy.backend import CupyBackend

    from rnnbackends import reference
    from tests.cupy.test_emulator import _cell_inputs, _run_cell

    be = CupyBackend()
    assert be.path(B, H, dtype, cell).kind == kind
    inputs = _cell_inputs(cell, 6, B, H, dtype, np.minimum(np.arange(B) + 1, 6), seed=3)
    want = _run_cell(reference, cell, *inputs)
    for _ in range(2):
        got = _run_cell(be, cell, *inputs)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    ctype = "double" if dtype == "float64" else "float"
    if kind == "graph":
        assert fake.count("graph") == 4 and all(p.graph is not None for p in chain._plans.values())
        assert f"{cell}_forward_step<{ctype}>" in fake and f"{cell}_backward_step<{ctype}>" in fake
    else:
        assert f"{cell}_forward_persistent<{ctype}>" in fake and f"{cell}_backward_persistent<{ctype}>" in fake
    assert be.device.persistent_error is None


def test_shared_memory_opt_in_above_48k(fake):
    """A persistent launch needing > 48 KiB sets max_dynamic_shared_size_bytes first."""
    from rnnbackends_cupy.backend import CupyBackend

    from rnnbackends.testing import make_case

    be = CupyBackend()
    B, H = 4, 160  # 4 fake SMs: cols = 40, (40·160 + 4·160)·8 B = 55 KiB of float64
    path = be.path(B, H, "float64")
    assert path.kind == "persistent" and path.shared_bytes > 48 * 1024
    arrays, _ = make_case(3, B, 2, H, "float64")
    be.forward_sequence(*arrays)
    assert be.device.persistent_error is None


def test_perf_gpu_suite_runs_through_the_runner(fake, tmp_path, monkeypatch):
    """perf/gpu.py end to end at toy sizes, every cell: fake cupy (emulated kernels) against torch.nn.RNN/GRU/LSTM
    on the CPU."""
    pytest.importorskip("torch")
    from rnnbackends_cupy.backend import CupyBackend

    import rnnbackends
    from perf import gpu, runner

    be = CupyBackend()
    handle = types.SimpleNamespace(forward_sequence=be.forward_sequence, backward_sequence=be.backward_sequence,
                                   impl=be, info=types.SimpleNamespace(reason="fake cupy"))
    real_get = rnnbackends.get_backend
    monkeypatch.setattr(rnnbackends, "get_backend", lambda name: handle if name == "cupy" else real_get(name))
    parser = gpu.add_arguments(argparse.ArgumentParser())
    parser.add_argument("--out")
    args = parser.parse_args(["--shapes", "8,2,5;12,40,4", "--warmup", "1", "--repeats", "2", "--gemm-size", "32",
                              "--torch-device", "cpu", "--out", str(tmp_path)])
    paths = runner.run(gpu, args, ["run", "--suite", "gpu"])
    result = __import__("json").loads(paths[0].read_text())
    kinds = {(r["H"], r["cell"], r["impl"], r["pass"]): r.get("path") for r in result["rows"]}
    for cell in ("rnn", "gru", "lstm"):
        assert kinds[(8, cell, "cupy", "forward")] == "persistent" and kinds[(12, cell, "cupy", "forward")] == "graph"
        assert kinds[(8, cell, "cudnn", "forward+backward")] is None
    assert {r["group"] for r in result["rows"]} == {"custom", "custom-gru", "custom-lstm"}
    assert {r["impl"] for r in result["rows"]} >= {"cupy", "cudnn"}
    table = paths[1].read_text()
    assert "speed-up vs cuDNN" in table and "| custom-lstm | lstm | 12 | 40 | 4 |" in table
