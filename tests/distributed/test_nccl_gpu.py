"""NCCL on real GPUs (perf/gpu_check.sh runs this on a GPU node): the unique id over the world, in-place sums and
broadcasts of CuPy arrays, and a data-parallel step whose gradients equal one process's. Skips without a GPU."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from rnnbackends import distributed
from rnnbackends.losses import categorical_cross_entropy
from rnnbackends.models import SequenceTagger
from tests.distributed.helpers import tagging_batches, world


def gpus():
    """How many GPUs CuPy sees (0 without CuPy, NCCL or a driver)."""
    if importlib.util.find_spec("cupy") is None:
        return 0
    try:
        import cupy
        from cupy.cuda import nccl  # noqa: F401
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:
        return 0


pytestmark = pytest.mark.skipif(gpus() < world().local_size,
                                reason="needs CuPy with NCCL and a GPU per rank (runs in perf/gpu_check.sh)")


def test_nccl_sums_and_broadcasts_cupy_arrays_in_place():
    import cupy
    from cupy.cuda import nccl
    comm = world()
    device = distributed.NCCLCommunicator(comm, nccl)
    for dtype in ("float32", "float64"):
        summed = cupy.full(1000, comm.rank + 1, dtype=dtype)
        assert device.allreduce_sum(summed) is summed
        assert float(summed[0]) == comm.size * (comm.size + 1) / 2
    sent = cupy.arange(5, dtype=cupy.int64) * (comm.rank + 1)
    device.broadcast(sent, root=0)
    assert sent.get().tolist() == [0, 1, 2, 3, 4]


def test_data_parallel_gradients_on_the_gpu_equal_one_process():
    from cupy.cuda import nccl

    import rnnbackends
    try:
        rnnbackends.get_backend("cupy")
    except rnnbackends.BackendError as exc:
        pytest.skip(f"the cupy backend is unavailable: {exc}")
    comm = world()
    device = distributed.NCCLCommunicator(comm, nccl) if comm.size > 1 else comm
    model = SequenceTagger(20, 5, embed_dim=6, hidden_size=8, backend="cupy", dtype="float64", seed=3)
    batch = tagging_batches(seed=1, batches=1, rows=4 * comm.size + 1)[0]
    loss, grads = distributed.global_batch_gradients(device, model, categorical_cross_entropy, batch)
    expected_loss, d_logits = categorical_cross_entropy(model.forward(*batch.inputs), batch.targets, batch.mask)
    model.backward(d_logits)
    assert loss == pytest.approx(expected_loss, rel=1e-10)
    for name, g in model.grads.items():
        np.testing.assert_allclose(grads[name].get(), g.get(), rtol=1e-9, atol=1e-12, err_msg=name)
