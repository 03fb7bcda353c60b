"""Data parallelism: N ranks with B rows each follow one process with N·B rows. Under a plain pytest the world is
one process (and the rank arithmetic is checked by simulating two ranks); `mpiexec -n 2 python -m pytest
tests/distributed` runs the same tests over MPI."""
from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from rnnbackends import distributed
from rnnbackends.data import Batch
from rnnbackends.losses import binary_cross_entropy, categorical_cross_entropy
from rnnbackends.models import SequenceClassifier, SequenceTagger
from rnnbackends.optimizers import Adam
from rnnbackends.training import Member, fit, train_members
from tests.distributed.helpers import sentiment_batches, tagging_batches, world

CASES = {  # name -> (model, loss, batches): masked per-step loss (uneven counts per rank) and one loss per row
    "tagger": (lambda: SequenceTagger(20, 5, embed_dim=6, hidden_size=7, backend="numpy", dtype="float64", seed=3),
               categorical_cross_entropy, tagging_batches),
    "classifier": (lambda: SequenceClassifier(20, 2, embed_dim=6, hidden_size=7, bidirectional=True, pooling="max",
                                              backend="numpy", dtype="float64", seed=3),
                   binary_cross_entropy, sentiment_batches),
}


def same_everywhere(comm, value):
    """Whether every rank holds the same JSON-able ``value`` (the answer on every rank)."""
    values = comm.gather_object(value)
    return comm.broadcast_object(None if values is None else all(v == values[0] for v in values))


def test_collectives_of_the_world():
    comm = world()
    assert comm.allreduce_sum(np.full(5, comm.rank + 1.0)).tolist() == [comm.size * (comm.size + 1) / 2] * 5
    assert comm.broadcast(np.full(3, comm.rank, np.int64), root=comm.size - 1).tolist() == [comm.size - 1] * 3
    assert comm.broadcast_object({"rank": comm.rank, "x": [1.5, None]}) == {"rank": 0, "x": [1.5, None]}
    if comm.size > 1:
        assert comm.broadcast_object({"a": np.float32(0.5), "b": np.arange(2)}) == {"a": 0.5, "b": [0, 1]}
    gathered = comm.gather_object({"rank": comm.rank})
    assert gathered == ([{"rank": r} for r in range(comm.size)] if comm.rank == 0 else None)
    comm.barrier()


class Simulated:
    """Rank ``rank`` of two in one process: the all-reduce returns the sum of the buffers both ranks recorded."""

    size = 2

    def __init__(self, rank, recorded):
        self.rank, self.recorded = rank, recorded

    def allreduce_sum(self, array):
        self.recorded[self.rank] = array.copy()
        if len(self.recorded) == 2:
            array[...] = self.recorded[0] + self.recorded[1]
        return array


@pytest.mark.parametrize("case", CASES)
def test_two_blocks_of_rows_give_the_gradient_of_the_whole_batch(case):
    make, loss_fn, batches = CASES[case]
    model, batch = make(), batches(seed=1, batches=1, rows=7)[0]                  # 7 rows: blocks of 3 and 4
    loss, d_logits = loss_fn(model.forward(*batch.inputs), batch.targets, batch.mask)
    model.backward(d_logits)
    expected = {name: g.copy() for name, g in model.grads.items()}
    recorded = {}
    distributed.global_batch_gradients(Simulated(0, recorded), model, loss_fn, batch)
    total, grads = distributed.global_batch_gradients(Simulated(1, recorded), model, loss_fn, batch)
    assert total == pytest.approx(loss, rel=1e-12)
    for name in expected:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-10, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_n_ranks_follow_the_loss_curve_of_one_process_with_the_whole_batch(case):
    comm = world()
    make, loss_fn, batches = CASES[case]
    data = batches(seed=2, rows=4 * comm.size + 1)       # N·B rows (+1: blocks differ by a row)
    check = batches(seed=9, batches=1)[0]

    def validate(model):                                          # NumPy scalars travel as JSON numbers
        return {"val_loss": np.float32(loss_fn(model.forward(*check.inputs), check.targets, check.mask)[0])}

    def train(communicator):
        model = make()
        history = fit(model, loss_fn, Adam(0.05), lambda epoch: data, epochs=4, validate=validate, clip_norm=0.5,
                      progress=False, log=None, communicator=communicator)
        return model, history

    parallel, parallel_history = train(comm)
    alone, alone_history = train(distributed.SingleProcess())
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose([r[name] for r in parallel_history], [r[name] for r in alone_history],
                                   rtol=1e-10, err_msg=name)
    for name, p in parallel.params.items():
        np.testing.assert_allclose(p, alone.params[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert same_everywhere(comm, {k: float(p.sum()) for k, p in parallel.params.items()})


def members(seed, data):
    """One dropout classifier whose batch order comes from its own generator (both restored by --resume)."""
    model = SequenceClassifier(20, 2, embed_dim=6, hidden_size=7, pooling="mean", dropout=0.3, embed_dropout=0.2,
                               backend="numpy", dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    return [Member(model, Adam(0.02), lambda epoch: [data[i] for i in rng.permutation(len(data))], rngs=[rng])]


def test_resume_across_ranks_repeats_the_uninterrupted_run(tmp_path):
    comm = world()
    save = comm.broadcast_object(str(tmp_path))                   # rank 0's folder: only rank 0 reads and writes it
    data = sentiment_batches(seed=4, rows=6 * comm.size)
    check = sentiment_batches(seed=5, batches=1)[0]

    def validate(model):
        return {"val_loss": binary_cross_entropy(model.forward(*check.inputs), check.targets)[0]}

    def run(epochs, resume=False, folder=save):
        return train_members(members(7, data), binary_cross_entropy, validate, epochs=epochs, meta={"task": "t"},
                             data_fingerprint="f", save=folder, resume=resume, progress=False, communicator=comm)

    run(2)
    resumed = run(4, resume=True)
    whole = run(4, folder=None)
    for name in ("epoch", "loss", "val_loss"):
        np.testing.assert_allclose([r[name] for r in resumed.histories[0]], [r[name] for r in whole.histories[0]],
                                   rtol=1e-9, err_msg=name)
    for name, p in resumed.models[0].params.items():
        np.testing.assert_allclose(p, whole.models[0].params[name], rtol=1e-9, err_msg=name)
    assert same_everywhere(comm, {k: float(p.sum()) for k, p in resumed.models[0].params.items()})


def test_a_rank_without_rows_adds_nothing():
    batch = sentiment_batches(seed=0, batches=1, rows=1)[0]
    assert distributed.shard(batch, 0, 2) is None
    part = distributed.shard(batch, 1, 2)
    assert part.inputs[0].shape == batch.inputs[0].shape and part.inputs[0].flags.c_contiguous
    model = CASES["classifier"][0]()
    recorded = {}
    distributed.global_batch_gradients(Simulated(0, recorded), model, binary_cross_entropy, batch)
    assert not recorded[0].any()                                   # zero gradients, loss and count
    loss, grads = distributed.global_batch_gradients(Simulated(1, recorded), model, binary_cross_entropy, batch)
    assert loss == pytest.approx(binary_cross_entropy(model.forward(*batch.inputs), batch.targets)[0], rel=1e-12)


def test_batches_that_cannot_be_split_by_rows_are_one_clear_error():
    ids, lengths = np.zeros((4, 3), np.int64), np.full(3, 4)
    with pytest.raises(ValueError, match="inputs and targets must be arrays"):
        distributed.shard(Batch((ids, lengths), (np.zeros(5), np.ones(3))), 0, 2)
    with pytest.raises(ValueError, match="cannot split an array of shape"):
        distributed.shard(Batch((ids, lengths), np.zeros((5, 5))), 0, 2)


def test_mpiexec_without_mpi4py_is_one_line(monkeypatch):
    import importlib.util
    monkeypatch.setattr(distributed, "_current", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real(name, *a))
    with pytest.raises(ValueError, match=r"PMI_SIZE is set\) but mpi4py is not installed: pip install 'rnnbackends\["):
        distributed.current()
    for variable, value in (("PMI_SIZE", "1"), ("PMIX_RANK", "0")):             # mpiexec -n 1; srun without MPI
        monkeypatch.delenv("PMI_SIZE")
        monkeypatch.setenv(variable, value)
        monkeypatch.setattr(distributed, "_current", None)
        assert isinstance(distributed.current(), distributed.SingleProcess)


class FakeDeviceArray:
    """A 'device' array for the NCCL test: host memory reached through its pointer, as NCCL reaches GPU memory."""

    def __init__(self, host):
        self.host = host
        self.data = types.SimpleNamespace(ptr=host.ctypes.data)
        self.size, self.dtype = host.size, host.dtype


def fake_nccl(comm):
    """A stand-in for ``cupy.cuda.nccl`` over ``comm``: it reads and writes memory by pointer, dtype code and count."""
    dtypes = {1: np.float32, 2: np.float64, 3: np.int64}
    calls = []

    class NcclCommunicator:
        def __init__(self, ndev, unique_id, rank):
            assert (ndev, rank) == (comm.size, comm.rank) and isinstance(unique_id, bytes)
            assert same_everywhere(comm, list(unique_id))                   # rank 0's id reached every rank
            calls.append(("init", unique_id))

        @staticmethod
        def view(pointer, count, code):
            ctype = np.ctypeslib.as_ctypes_type(dtypes[code])
            return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctype)), (count,))

        def allReduce(self, send, receive, count, code, op, stream):
            assert send == receive and op == module.NCCL_SUM and stream == 0
            calls.append(("allReduce", count, code))
            comm.allreduce_sum(self.view(receive, count, code))

        def bcast(self, pointer, count, code, root, stream):
            calls.append(("bcast", count, code, root))
            comm.broadcast(self.view(pointer, count, code), root)

    module = types.SimpleNamespace(NCCL_FLOAT32=1, NCCL_FLOAT64=2, NCCL_INT64=3, NCCL_SUM=0, calls=calls,
                                   NcclCommunicator=NcclCommunicator,
                                   get_unique_id=lambda: bytes(np.random.default_rng().integers(0, 256, 128,
                                                                                                np.uint8)))
    return module


def test_nccl_communicator_sums_and_broadcasts_device_memory_in_place():
    comm = world()
    nccl = fake_nccl(comm)
    device = distributed.NCCLCommunicator(comm, nccl)
    summed = FakeDeviceArray(np.full(6, comm.rank + 1.0, np.float32))
    assert device.allreduce_sum(summed) is summed
    assert summed.host.tolist() == [comm.size * (comm.size + 1) / 2] * 6
    sent = FakeDeviceArray(np.arange(4, dtype=np.int64) * (comm.rank + 1))
    device.broadcast(sent, root=0)
    assert sent.host.tolist() == [0, 1, 2, 3]
    assert [c[0] for c in nccl.calls] == ["init", "allReduce", "bcast"]
    assert nccl.calls[1][1:] == (6, 1) and nccl.calls[2][1:] == (4, 3, 0)
    with pytest.raises(TypeError, match="NCCL cannot carry dtype complex128"):
        device.allreduce_sum(FakeDeviceArray(np.zeros(2, np.complex128)))
    if isinstance(comm, distributed.MPICommunicator):             # an MPI world hands device arrays to NCCL
        comm._nccl = device
        routed = FakeDeviceArray(np.ones(3, np.float64))
        comm.allreduce_sum(routed)
        assert routed.host.tolist() == [comm.size] * 3 and nccl.calls[-1][0] == "allReduce"
        comm._nccl = None
