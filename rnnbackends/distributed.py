"""Past one machine: a communicator seam (one process, MPI, NCCL) and data-parallel training on it.

Without ``mpiexec`` everything runs as one process (``SingleProcess``) and mpi4py is never imported. Launched by
``mpiexec -n N`` (or any launcher that sets the MPI process-manager variables: MPICH, Open MPI, Intel MPI, srun),
``current()`` is the world over MPI (``MPICommunicator``, host arrays, mpi4py); CuPy arrays go through NCCL
(``NCCLCommunicator``, ``cupy.cuda.nccl``, its unique id broadcast over MPI). A communicator has ``rank``,
``size``, ``allreduce_sum(array)`` and ``broadcast(array, root)`` (both in place), ``barrier()``, and
``broadcast_object`` / ``gather_object`` for small JSON values (never pickle).

Data parallelism: every rank builds the same batches (same seed); each global batch of B rows is cut into N blocks
of rows, rank r computes the loss and gradients of its block, and one ``allreduce_sum`` of one flat buffer per step
adds up [gradients · count, loss · count, count] in the model's parameter order, where count is the block's
number of loss entries (its mask's sum, else its targets' size). Dividing by the global count gives exactly the
gradient of the mean loss over the whole batch, so N ranks with B/N rows each follow the loss curve of one process
with B rows, up to float rounding. Weights start from rank 0's (broadcast) and every rank applies the same update.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import socket
import sys
import time
import traceback

import numpy as np

from .arrays import to_host

LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_current = None


def launched_by_mpiexec():
    """The launcher variable that says this process is one rank of an MPI job, or None."""
    return next((name for name in LAUNCHER_VARIABLES if name in os.environ), None)


def launched_size():
    """The number of ranks the launcher says it started, or None when it does not say."""
    return next((int(os.environ[name]) for name in SIZE_VARIABLES if os.environ.get(name, "").isdigit()), None)


def current():
    """This process's communicator: ``SingleProcess`` unless launched by ``mpiexec`` with more than one rank (then
    the MPI world). A launcher that does not say how many ranks (srun's PMIx) gets MPI only when mpi4py is there."""
    global _current
    if _current is None:
        variable, size = launched_by_mpiexec(), launched_size()
        mpi4py = importlib.util.find_spec("mpi4py") is not None
        if variable is None or size == 1 or size is None and not mpi4py:
            _current = SingleProcess()
        else:
            if not mpi4py:
                raise ValueError(f"launched by mpiexec ({variable} is set) but mpi4py is not installed: "
                                 "pip install 'rnnbackends[mpi]'")
            _current = MPICommunicator()
            _current.share_cores()
            _current.use_local_gpu()
    return _current


def use(communicator):
    """Make ``communicator`` what ``current()`` returns (e.g. a sub-communicator, or SingleProcess)."""
    global _current
    _current = communicator


class SingleProcess:
    """One process: the sums and broadcasts of a world of one."""

    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce_sum(self, array):
        """The sum over one rank: ``array`` itself."""
        return array

    def broadcast(self, array, root=0):
        """Rank 0's ``array``: ``array`` itself."""
        return array

    def barrier(self):
        """Nothing to wait for."""

    def broadcast_object(self, value, root=0):
        """``value`` itself."""
        return value

    def gather_object(self, value, root=0):
        """[``value``]."""
        return [value]

    def abort(self, code):
        """Exit this process with ``code``."""
        raise SystemExit(code)


def to_json(value):
    """``value`` as JSON bytes in a uint8 array; NumPy scalars and arrays become numbers and lists."""
    def plain(item):
        if isinstance(item, (np.generic, np.ndarray)):
            return item.tolist()
        raise TypeError(f"cannot send a {type(item).__name__} between ranks (JSON values only)")
    return np.frombuffer(json.dumps(value, default=plain).encode(), np.uint8).copy()


def wait(request):
    """Complete an MPI request, sleeping between tests so a waiting rank leaves the CPU to the others."""
    delay = 1e-5
    while not request.Test():
        time.sleep(delay)
        delay = min(2 * delay, 5e-4)       # MPI's blocking calls spin on a core; this costs at most 0.5 ms


def is_device_array(array):
    """Whether ``array`` lives on a GPU (a CuPy array), i.e. not a host NumPy array."""
    return not isinstance(array, np.ndarray) and hasattr(array, "data") and hasattr(array.data, "ptr")


class MPICommunicator:
    """Ranks of an MPI communicator (mpi4py): host arrays over MPI, CuPy arrays over NCCL when it is there."""

    def __init__(self, comm=None, install_abort_hook=True):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)                          # the ranks on this node
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        self._nccl = None
        if install_abort_hook and self.size > 1:
            previous = sys.excepthook

            def abort_hook(kind, value, tb):
                """An uncaught error on one rank ends the whole job instead of leaving the others waiting."""
                previous(kind, value, tb)
                sys.stderr.flush()
                self.abort(1)
            sys.excepthook = abort_hook

    def device(self):
        """The NCCL communicator over the same ranks, or None without ``cupy.cuda.nccl`` or when ranks share a GPU
        (NCCL refuses two ranks on one device: their CuPy arrays then go through the host)."""
        if self._nccl is None:
            try:
                import cupy
                from cupy.cuda import nccl
                shared = self.local_size > cupy.cuda.runtime.getDeviceCount()
            except Exception:                  # no CuPy, no NCCL in this CuPy, or no driver
                shared, nccl = True, None
            usable = np.array([0 if shared else 1], np.int64)                 # every rank must agree
            wait(self.comm.Iallreduce(self.MPI.IN_PLACE, usable, op=self.MPI.MIN))
            self._nccl = NCCLCommunicator(self, nccl) if usable[0] else False
        return self._nccl or None

    def share_cores(self):
        """Ranks on one node split its cores: Numba threads = cores // ranks here (unless NUMBA_NUM_THREADS is set)."""
        if self.local_size == 1 or "NUMBA_NUM_THREADS" in os.environ:
            return
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // self.local_size)
        os.environ["NUMBA_NUM_THREADS"] = str(threads)                    # read when numba is first imported
        if "numba" in sys.modules:
            sys.modules["numba"].set_num_threads(min(threads, sys.modules["numba"].config.NUMBA_NUM_THREADS))

    def use_local_gpu(self):
        """On a node with GPUs, give each rank its own (local rank modulo the GPU count); no-op without CuPy."""
        if self.size == 1 or importlib.util.find_spec("cupy") is None:
            return
        try:
            import cupy
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception:                      # CuPy without a driver or GPU: nothing to choose
            return
        if count:
            cupy.cuda.Device(self.local_rank % count).use()

    def allreduce_sum(self, array):
        """Sum ``array`` over the ranks, in place (C-contiguous); CuPy arrays by NCCL, else through the host."""
        if is_device_array(array):
            if self.device() is not None:
                return self.device().allreduce_sum(array)
            host = to_host(array)
            wait(self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM))
            array.set(host)
            return array
        wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM))
        return array

    def broadcast(self, array, root=0):
        """Rank ``root``'s ``array`` on every rank, in place (C-contiguous)."""
        if is_device_array(array):
            if self.device() is not None:
                return self.device().broadcast(array, root)
            host = to_host(array)
            wait(self.comm.Ibcast(host, root=root))
            array.set(host)
            return array
        wait(self.comm.Ibcast(array, root=root))
        return array

    def barrier(self):
        """Wait until every rank is here."""
        wait(self.comm.Ibarrier())

    def broadcast_object(self, value, root=0):
        """Rank ``root``'s JSON-able ``value`` on every rank."""
        data = to_json(value) if self.rank == root else None
        size = np.array([0 if data is None else data.size], np.int64)
        self.broadcast(size, root)
        buffer = np.empty(int(size[0]), np.uint8) if data is None else data
        self.broadcast(buffer, root)
        return json.loads(buffer.tobytes().decode())

    def gather_object(self, value, root=0):
        """Every rank's JSON-able ``value``, in rank order, on ``root`` (None elsewhere)."""
        data = to_json(value)
        sizes = np.zeros(self.size, np.int64)
        wait(self.comm.Iallgather(np.array([data.size], np.int64), sizes))
        received = np.empty(int(sizes.sum()), np.uint8) if self.rank == root else None
        wait(self.comm.Igatherv(data, [received, sizes] if self.rank == root else None, root=root))
        if self.rank != root:
            return None
        ends = np.cumsum(sizes)
        return [json.loads(received[end - size:end].tobytes().decode()) for size, end in zip(sizes, ends)]

    def abort(self, code):
        """End every rank of the job now with exit status ``code``."""
        sys.stderr.flush()
        time.sleep(0.2)       # mpiexec forwards the rank's last stderr lines (its error) before Abort ends the job
        self.comm.Abort(code)


class NCCLCommunicator:
    """All-reduce and broadcast of CuPy arrays between GPUs with NCCL; the rest over its MPI communicator."""

    def __init__(self, mpi, nccl):
        self.mpi, self.nccl = mpi, nccl
        self.rank, self.size, self.local_rank, self.local_size = mpi.rank, mpi.size, mpi.local_rank, mpi.local_size
        unique_id = nccl.get_unique_id() if mpi.rank == 0 else None        # bytes (CuPy >= 13) or a tuple of ints
        sent = mpi.broadcast_object(None if unique_id is None else {"bytes": isinstance(unique_id, bytes),
                                                                    "values": list(unique_id)})
        unique_id = bytes(sent["values"]) if sent["bytes"] else tuple(sent["values"])
        self.comm = nccl.NcclCommunicator(mpi.size, unique_id, mpi.rank)

    def dtype_code(self, dtype):
        """NCCL's code of a NumPy dtype."""
        codes = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64",
                 "int32": "NCCL_INT32", "int64": "NCCL_INT64", "uint8": "NCCL_UINT8"}
        name = np.dtype(dtype).name
        if name not in codes:
            raise TypeError(f"NCCL cannot carry dtype {name}")
        return getattr(self.nccl, codes[name])

    @staticmethod
    def stream():
        """The current CUDA stream's handle (0: the default stream)."""
        cupy = sys.modules.get("cupy")
        return 0 if cupy is None else cupy.cuda.get_current_stream().ptr

    def allreduce_sum(self, array):
        """Sum a C-contiguous device ``array`` over the ranks, in place, on the current stream."""
        pointer = array.data.ptr
        self.comm.allReduce(pointer, pointer, array.size, self.dtype_code(array.dtype), self.nccl.NCCL_SUM,
                            self.stream())
        return array

    def broadcast(self, array, root=0):
        """Rank ``root``'s device ``array`` on every rank, in place."""
        self.comm.bcast(array.data.ptr, array.size, self.dtype_code(array.dtype), root, self.stream())
        return array

    def barrier(self):
        """Wait until every rank is here (over MPI)."""
        self.mpi.barrier()

    def broadcast_object(self, value, root=0):
        """Rank ``root``'s JSON-able value (over MPI)."""
        return self.mpi.broadcast_object(value, root)

    def gather_object(self, value, root=0):
        """Every rank's JSON-able value on ``root`` (over MPI)."""
        return self.mpi.gather_object(value, root)

    def abort(self, code):
        """End every rank of the job now."""
        self.mpi.abort(code)


@contextlib.contextmanager
def together(communicator=None):
    """Start when every rank is ready; an error inside on one rank prints it and ends every rank (exit 2 for a
    ValueError, 130 for Ctrl-C, 1 otherwise) instead of leaving the others waiting. One process: unchanged."""
    communicator = current() if communicator is None else communicator
    if communicator.size == 1:
        yield communicator
        return
    communicator.barrier()
    try:
        yield communicator
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        code = 2 if isinstance(exc, (ValueError, OSError)) else 130 if isinstance(exc, KeyboardInterrupt) else 1
        if code == 1:
            traceback.print_exc()
        where = f"rank {communicator.rank} of {communicator.size} ({socket.gethostname()})"
        print(f"rnnbackends: interrupted on {where}; stopping every rank (a run saved with --save continues with "
              "--resume)" if code == 130 else f"rnnbackends: error on {where}: "
              f"{' '.join(str(exc).split()) or type(exc).__name__}; stopping every rank", file=sys.stderr)
        sys.stderr.flush()
        communicator.abort(code)


def row_bounds(rows, rank, size):
    """[start, stop) of rank ``rank``'s block of ``rows`` rows (blocks differ by at most one row)."""
    return rank * rows // size, (rank + 1) * rows // size


def rows_of(batch):
    """B, the rows of a Batch: axis 1 of its first input (time-major (T, B, ...)), axis 0 when that is 1-D."""
    first = batch.inputs[0]
    return first.shape[1] if first.ndim >= 2 else first.shape[0]


def block(array, rows, start, stop):
    """Rows [start, stop) of ``array``: on axis 1 when time-major (T, B, ...), on axis 0 when (B, ...)."""
    if array is None:
        return None
    shape = np.shape(array)
    if len(shape) >= 2 and shape[1] == rows:
        part = array[:, start:stop]
    elif len(shape) >= 1 and shape[0] == rows:
        part = array[start:stop]
    else:
        raise ValueError(f"data-parallel training cannot split an array of shape {shape} into rows: each "
                         f"array of a batch needs its B = {rows} rows on axis 1 (time-major) or axis 0")
    return part if isinstance(array, np.ndarray) and part.flags.c_contiguous else \
        importlib.import_module(type(array).__module__.split(".")[0]).ascontiguousarray(part)


def shard(batch, rank, size):
    """Rank ``rank``'s block of rows of ``batch`` (a Batch of the same kind), or None when it gets no rows."""
    if not all(hasattr(a, "shape") for a in (batch.targets, *batch.inputs) if a is not None):
        raise ValueError("data-parallel training splits batches by rows: inputs and targets must be arrays, "
                         f"not {type(batch.targets).__name__}; train this task in one process (without mpiexec)")
    rows = rows_of(batch)
    start, stop = row_bounds(rows, rank, size)
    if start == stop:
        return None
    return type(batch)(tuple(block(a, rows, start, stop) for a in batch.inputs),
                       block(batch.targets, rows, start, stop), block(batch.mask, rows, start, stop))


def entries(batch):
    """How many entries a mean-reduced loss averages over: the mask's sum, else the targets' size."""
    return float(to_host(batch.mask).sum()) if batch.mask is not None else float(np.size(batch.targets))


def global_batch_gradients(communicator, model, loss_fn, batch):
    """(mean loss, gradients) of the whole ``batch``, this rank computing its rows: one all-reduce of one buffer."""
    params = model.params                                      # the model's order: the same on every rank
    part = shard(batch, communicator.rank, communicator.size)
    xp = model.xp
    if part is None:
        loss, count, grads = 0.0, 0.0, {name: xp.zeros_like(p) for name, p in params.items()}
    else:
        logits = model.forward(*part.inputs)
        loss, d_logits = loss_fn(logits, part.targets, part.mask)
        model.backward(d_logits)
        grads, count = model.grads, entries(part)
    dtype = np.result_type(*(g.dtype for g in grads.values()))
    sizes = [grads[name].size for name in params]
    flat = xp.empty(sum(sizes) + 2, dtype=dtype)               # [gradients · count..., loss · count, count]
    offset = 0
    for name, n in zip(params, sizes):
        flat[offset:offset + n] = grads[name].ravel() * count
        offset += n
    flat[offset:] = xp.asarray([loss * count, count], dtype=dtype)
    communicator.allreduce_sum(flat)
    total_loss, total_count = (float(v) for v in to_host(flat[offset:]))
    total_count = max(total_count, 1.0)                        # as the losses do: an all-padding batch gives 0
    flat /= total_count
    out, offset = {}, 0
    for name, n in zip(params, sizes):
        out[name] = flat[offset:offset + n].reshape(params[name].shape)
        offset += n
    return total_loss / total_count, out


def broadcast_arrays(communicator, arrays, root=0):
    """Rank ``root``'s values of same-shaped ``arrays`` (a list) copied into them on every rank: one buffer."""
    if not arrays:
        return arrays
    xp = importlib.import_module(type(arrays[0]).__module__.split(".")[0])
    flat = xp.concatenate([xp.asarray(a).ravel() for a in arrays]).astype(np.result_type(*arrays), copy=False)
    communicator.broadcast(flat, root)
    offset = 0
    for a in arrays:
        a[...] = flat[offset:offset + a.size].reshape(a.shape)
        offset += a.size
    return arrays


def share_weights(communicator, model):
    """Every rank takes rank 0's weights (one broadcast)."""
    if communicator.size > 1:
        broadcast_arrays(communicator, list(model.params.values()))


def share_optimizer(communicator, optimizer, xp):
    """Every rank takes rank 0's optimiser state (step count and slots)."""
    if communicator.size == 1:
        return
    state = optimizer.state_dict()
    layout = communicator.broadcast_object({"iterations": state["iterations"], "arrays": {
        path: [list(a.shape), a.dtype.str] for path, a in state["arrays"].items()}})
    arrays = {path: state["arrays"][path] if communicator.rank == 0 else np.empty(shape, dtype)
              for path, (shape, dtype) in layout["arrays"].items()}
    for dtype in sorted({a.dtype.str for a in arrays.values()}):
        broadcast_arrays(communicator, [a for a in arrays.values() if a.dtype.str == dtype])
    optimizer.load_state_dict({"iterations": layout["iterations"], "arrays": arrays}, xp)


def share_run(communicator, model, optimizer, rngs, state, best_state):
    """Every rank continues rank 0's run: weights, optimiser, generators and the JSON ``state`` (epoch, history,
    best); ``best_state`` (host weights or None) too. Returns (state, best_state) as rank 0 has them."""
    share_weights(communicator, model)
    share_optimizer(communicator, optimizer, model.xp)
    state = communicator.broadcast_object({**state, "rngs": [rng.bit_generator.state for rng in rngs],
                                           "has_best_state": best_state is not None})
    for rng, saved in zip(rngs, state.pop("rngs")):
        rng.bit_generator.state = saved
    if state.pop("has_best_state"):
        names = list(model.params)
        best_state = best_state if communicator.rank == 0 else {
            name: np.empty(to_host(p).shape, to_host(p).dtype) for name, p in model.params.items()}
        broadcast_arrays(communicator, [best_state[name] for name in names])
    return state, best_state


def on_root(communicator, compute):
    """``compute()``'s JSON-able result, computed on rank 0 alone and sent to every rank."""
    return communicator.broadcast_object(compute() if communicator.rank == 0 else None)
