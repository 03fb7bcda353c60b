"""The validating handle: checks every argument once, then calls the backend (docs/contract.md)."""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from .arrays import checked_lengths

NONLINEARITIES = ("tanh", "relu")


# OpenBLAS runs a GEMM of fewer multiply-adds than this on one thread (SMP threshold 65536 × 4), and the numba
# backend splits no smaller call: it gains nothing from the hold, which costs ≈ 5 µs.
BLAS_HOLD_MIN_WORK = 1 << 18
CELLS = {"rnn": 1, "gru": 3, "lstm": 4}   # gates per cell (G): w_x (D, G·H), w_a (H, G·H), b_a and b_r (G·H,)


class Saved:
    """What ``forward_sequence`` returns for backward: the backend's own state plus the shapes it checks."""

    __slots__ = ("backend_name", "shape", "dtype", "inner", "cell")

    def __init__(self, backend_name, shape, dtype, inner, cell="rnn"):
        self.backend_name, self.shape, self.dtype, self.inner, self.cell = backend_name, shape, dtype, inner, cell

    def __repr__(self):
        t, b, h = self.shape
        return f"<saved {self.cell} forward of backend {self.backend_name!r}: T={t} B={b} H={h} {self.dtype}>"


def _check_finite() -> bool:
    return os.environ.get("RNNBACKENDS_CHECK_FINITE", "") not in ("", "0")


class Backend:
    """A selected backend behind the contract's checks; ``name``, ``xp`` and ``capabilities`` pass through.

    Plugins built for contract version 1 (the simple cell only) are adapted here: they serve ``cell="rnn"``, with
    b_R folded into b_A and d_b_r = d_b_a.
    """

    def __init__(self, impl, info):
        self.impl = impl
        self.info = info
        self.name = impl.name
        self.xp = impl.xp
        self.api_version = info.spec.api_version if info.spec is not None else 2
        self.capabilities = frozenset(impl.capabilities) | ({"rnn"} if self.api_version == 1 else set())

    def __repr__(self):
        return f"<rnnbackends backend {self.name!r} ({self.info.spec.device})>"

    # -- the contract ---------------------------------------------------------------------------
    def forward_sequence(self, x, state0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh", cell="rnn",
                         b_r=None):
        """The cell's chain over t=1..T -> (a (T,B,H), state_n, saved); state is A (B,H), or (A, C) for LSTM."""
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, got {cell!r}")
        self._require(cell, f"cell={cell!r}")
        G = CELLS[cell]
        states = _state_parts("state0", state0, cell, ("a0", "c0"))
        optional = {} if b_r is None else {"b_r": b_r}
        checked = dict(zip(["x", *states, "w_x", "w_a", "b_a", *optional],
                           self._arrays(x=x, **states, w_x=w_x, w_a=w_a, b_a=b_a, **optional)))
        x, w_x, w_a, b_a = checked["x"], checked["w_x"], checked["w_a"], checked["b_a"]
        T, B, D = x.shape
        if T == 0 or B == 0:
            raise ValueError(f"x must hold at least one step and one sequence, got shape (T, B, D) = {x.shape}")
        if w_x.shape[1] % G:
            raise ValueError(f"w_x must have shape (D, {G}·H) for cell={cell!r} (its {G} gates side by side), "
                             f"got {tuple(w_x.shape)}")
        H = w_x.shape[1] // G
        gates = "H" if G == 1 else f"{G}·H"
        _shape("w_x", w_x, (D, G * H), f"(D, {gates})", "D from x")
        for name in states:
            _shape(name, checked[name], (B, H), "(B, H)", "B from x, H from w_x")
        _shape("w_a", w_a, (H, G * H), f"(H, {gates})", "H from w_x")
        _shape("b_a", b_a, (G * H,), f"({gates},)", "H from w_x")
        if b_r is not None:                                          # None: b_R = 0
            b_r = checked["b_r"]
            _shape("b_r", b_r, (G * H,), f"({gates},)", "H from w_x")
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
        if cell != "rnn" and nonlinearity != "tanh":
            raise ValueError(f"nonlinearity applies to cell='rnn' only; {cell.upper()} has its own sigmoid "
                             f"gates and tanh (leave nonlinearity at 'tanh')")
        self._require(nonlinearity, f"nonlinearity={nonlinearity!r}")
        if lengths is not None:
            self._require("lengths", "lengths=")
            lengths = checked_lengths(lengths, T, B)
        state0 = tuple(checked[name] for name in states) if cell == "lstm" else checked["a0"]
        with self._threads(T * B * G * H * H):
            a, state_n, inner = self._forward(x, state0, w_x, w_a, b_a, b_r, lengths, nonlinearity, cell)
        return a, state_n, Saved(self.name, (T, B, H), x.dtype, inner, cell)

    def _forward(self, x, state0, w_x, w_a, b_a, b_r, lengths, nonlinearity, cell):
        """The backend's forward on checked arguments (a version-1 plugin gets b_R folded into b_A)."""
        if self.api_version == 1:                                   # the simple cell, b_R folded into b_A
            return self.impl.forward_sequence(x, state0, w_x, w_a, b_a if b_r is None else b_a + b_r,
                                              lengths=lengths, nonlinearity=nonlinearity)
        return self.impl.forward_sequence(x, state0, w_x, w_a, b_a, lengths=lengths, nonlinearity=nonlinearity,
                                          cell=cell, b_r=b_r)

    def backward_sequence(self, saved, d_a, d_state_n=None):
        """BPTT from dL/dA (T,B,H) and dL/dstate_n -> (d_x, d_state0, d_w_x, d_w_a, d_b_a, d_b_r)."""
        if not isinstance(saved, Saved):
            raise TypeError(f"saved must be the third value returned by forward_sequence, "
                            f"got {type(saved).__name__}")
        if saved.backend_name != self.name:
            raise TypeError(f"saved comes from backend {saved.backend_name!r}; pass it back to that "
                            f"backend's backward_sequence, not {self.name!r}'s")
        T, B, H = saved.shape
        parts = {} if d_state_n is None else _state_parts("d_state_n", d_state_n, saved.cell, ("d_a_n", "d_c_n"))
        given = {name: value for name, value in parts.items() if value is not None}
        checked = dict(zip(["d_a", *given], self._arrays(d_a=d_a, **given, dtype=saved.dtype)))
        d_a = checked["d_a"]
        _shape("d_a", d_a, (T, B, H), "(T, B, H)", "as a from forward_sequence")
        for name in given:
            _shape(name, checked[name], (B, H), "(B, H)", "as state_n from forward_sequence")
        if saved.cell == "lstm":
            zeros = self.xp.zeros((B, H), dtype=saved.dtype)
            d_state_n = None if not given else (checked.get("d_a_n", zeros), checked.get("d_c_n", zeros))
        else:
            d_state_n = checked.get("d_a_n")
        with self._threads(T * B * CELLS[saved.cell] * H * H):
            grads = self.impl.backward_sequence(saved.inner, d_a, d_state_n)
        if self.api_version == 1:
            return (*grads, grads[4].copy())                         # b_R was folded into b_A: d_b_r = d_b_a
        return grads

    def _threads(self, work):
        """NumPy's BLAS held to one thread during a call of T·B·G·H² recurrent multiply-adds when the backend runs
        its own threads; below BLAS_HOLD_MIN_WORK nothing runs threaded either way, and the hold is left out."""
        owns = getattr(self.impl, "owns_threads", False)
        return one_blas_thread if owns and work >= BLAS_HOLD_MIN_WORK else contextlib.nullcontext()

    # -- checks ---------------------------------------------------------------------------------
    def _require(self, capability, what):
        if capability not in self.capabilities:
            raise NotImplementedError(f"backend {self.name!r} does not support {what} (its capabilities: "
                                      f"{', '.join(sorted(self.capabilities))}); select another backend")

    def _arrays(self, dtype=None, **arrays):
        """Type, rank, dtype and finiteness of each named array; returns them C-contiguous."""
        xp = self.xp
        out = []
        dtype_from = "forward's inputs" if dtype is not None else None
        check_finite = _check_finite()
        for name, arr in arrays.items():
            if not isinstance(arr, xp.ndarray):
                raise TypeError(f"{name} must be a {xp.__name__}.ndarray (backend {self.name!r} works on "
                                f"{xp.__name__} arrays), got {type(arr).__module__}.{type(arr).__name__}; "
                                f"convert it with backend.xp.asarray({name})")
            want_ndim = _NDIM.get(name, 2)
            if arr.ndim != want_ndim:
                raise ValueError(f"{name} must be {want_ndim}-D {_SHAPES[name]}, got shape {tuple(arr.shape)}")
            if dtype is None:
                if arr.dtype not in _FLOAT_DTYPES:
                    raise TypeError(f"{name} has dtype {arr.dtype}; rnnbackends computes in float32 or "
                                    f"float64: convert with {name}.astype('float32')")
                dtype, dtype_from = arr.dtype, name
                if _FLOAT_DTYPES[arr.dtype] not in self.capabilities:     # (formatting a dtype costs µs)
                    self._require(_FLOAT_DTYPES[arr.dtype], f"dtype {arr.dtype}")
            elif arr.dtype != dtype:
                raise TypeError(f"{name} has dtype {arr.dtype} but {dtype_from} has {dtype}; "
                                f"convert it with {name}.astype('{dtype}')")
            if check_finite and not bool(xp.isfinite(arr).all()):
                raise ValueError(f"{name} contains NaN or Inf (RNNBACKENDS_CHECK_FINITE is set)")
            out.append(xp.ascontiguousarray(arr))
        return out


_NDIM = {"x": 3, "d_a": 3, "b_a": 1, "b_r": 1}
_FLOAT_DTYPES = {np.dtype(name): name for name in ("float16", "float32", "float64")}   # dtype -> capability
_SHAPES = {"x": "(T, B, D)", "a0": "(B, H)", "c0": "(B, H)", "w_x": "(D, G·H)", "w_a": "(H, G·H)",
           "b_a": "(G·H,)", "b_r": "(G·H,)", "d_a": "(T, B, H)", "d_a_n": "(B, H)", "d_c_n": "(B, H)"}


class _BlasThreads:
    """Holds NumPy's BLAS to one thread from the first entry to the last exit (any Python thread), then restores
    each library's thread count; a backend that runs its own threads (``owns_threads = True``) computes inside.
    threadpoolctl finds the BLAS libraries once; each get or set of a count is one C call (~2 µs)."""

    def __init__(self):
        self.lock, self.depth, self.saved, self.libraries = threading.Lock(), 0, [], None

    def __enter__(self):
        with self.lock:
            if self.depth == 0:
                if self.libraries is None:
                    from threadpoolctl import ThreadpoolController
                    self.libraries = ThreadpoolController().select(user_api="blas").lib_controllers
                self.saved = [(lib, n) for lib in self.libraries if (n := lib.get_num_threads()) != 1]
                for lib, _ in self.saved:
                    lib.set_num_threads(1)
            self.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for lib, n in self.saved:
                    lib.set_num_threads(n)


one_blas_thread = _BlasThreads()   # the context manager: ``with one_blas_thread: ...``


def idle_cores(loadavg=None):
    """Cores this process may use that no other runnable thread holds right now, at least 1: the cores of its
    affinity minus the running count of /proc/loadavg (or of the text given), less the caller itself. A backend
    that splits a call across threads splits it across at most this many, so that on a busy machine no part of
    the call waits for a core (all cores where the count cannot be read). A busy count is read again after
    yielding the core once, and the lower one kept: a thread that has just finished its part of our previous
    work (a split GEMM's helper, an OpenMP worker) is still counted as running for a few microseconds."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        running = _running(loadavg)
        if running > 1 and loadavg is None:
            os.sched_yield()
            running = min(running, _running(None))
    except (OSError, ValueError, IndexError):
        return cores
    return max(1, min(cores, cores - (running - 1)))


def _running(loadavg):
    """The count of running threads in /proc/loadavg's fourth field (read now, or from the text given)."""
    if loadavg is None:                                      # os.read: a third of open()'s cost
        fd = os.open("/proc/loadavg", os.O_RDONLY)
        try:
            loadavg = os.read(fd, 128)
        finally:
            os.close(fd)
    return int(loadavg.split()[3].split(b"/" if isinstance(loadavg, bytes) else "/")[0])


def _state_parts(name, state, cell, names):
    """{part name: array} of a state argument: one array A, or for LSTM the pair (A, C)."""
    if cell == "lstm":
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} of an LSTM is the pair ({names[0]}, {names[1]}), each (B, H); "
                            f"got {type(state).__name__}")
        return dict(zip(names, state))
    if isinstance(state, tuple):
        raise TypeError(f"{name} of cell={cell!r} is one array {names[0]} (B, H), not a {type(state).__name__}; "
                        f"only an LSTM carries the pair (A, C)")
    return {names[0]: state}


def _shape(name, arr, want, pattern, origin):
    if tuple(arr.shape) != want:
        raise ValueError(f"{name} must have shape {pattern} = {want} ({origin}), got {tuple(arr.shape)}")
