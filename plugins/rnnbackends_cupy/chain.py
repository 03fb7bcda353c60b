"""The sequential A-chain on the device, two ways, and the choice between them, for each cell.

(a) persistent: one cooperative launch of persistent.cu (rnn) or gated_persistent.cu (gru, lstm) for all T
    steps (small batches, W_A slices of all gates fit in shared memory); (b) graph: per step one cuBLAS GEMM for
    all gates plus one fused step.cu / gated_step.cu kernel, the whole loop captured once per shape in a CUDA
    graph and replayed (large batches, or W_A too big for on-chip).
Everything outside the chain (input projection, weight gradients) is rnnbackends.chain's host code.
"""
from __future__ import annotations

import collections
import logging
import math
import os
from typing import NamedTuple

import numpy as np

log = logging.getLogger("rnnbackends.cupy")

ROWS = 4          # batch rows per persistent work item (persistent.cuh's ROWS)
STEP_THREADS = 256
GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # G: W_A is (H, G·H)


class Path(NamedTuple):
    """How one (B, H, dtype) runs: kind 'persistent' or 'graph', and the persistent launch geometry."""

    kind: str
    blocks: int = 0        # persistent grid: block i owns H-columns [i*cols, (i+1)*cols)
    cols: int = 0
    threads: int = 0
    shared_bytes: int = 0  # W_A slice (G·cols, H) + staged state (B, G·H) at most
    why: str = ""


def choose_path(B, H, itemsize, limits, force=None, gates=1) -> Path:
    """Persistent when the device can co-schedule the grid and its W_A slices (all G gates) fit on-chip and B is
    small."""
    force = force or os.environ.get("RNNBACKENDS_CUPY_PATH", "auto")
    if force not in ("auto", "persistent", "graph"):
        raise ValueError(f"RNNBACKENDS_CUPY_PATH must be auto, persistent or graph, got {force!r}")
    groups = math.ceil(B / ROWS)
    # columns per block: enough blocks to hold H, but at least one work item per warp (fewer blocks at
    # small H make the per-step grid barrier cheaper)
    cols = min(H, max(math.ceil(H / limits.blocks), math.ceil(limits.threads // 32 / groups)))
    blocks = math.ceil(H / cols)
    shared = gates * (cols * H + B * H) * itemsize  # forward: (G·cols, H) + (B, H); backward: (cols, G·H) + (B, G·H)
    warps = max(1, min(limits.threads // 32, cols * groups))
    persistent = Path("persistent", blocks, cols, 32 * warps, shared)
    if force == "graph":
        return Path("graph", why="forced by RNNBACKENDS_CUPY_PATH=graph")
    if not limits.cooperative:
        return Path("graph", why="the device has no cooperative launch")
    if shared > limits.shared_bytes:
        return Path("graph", why=f"W_A slice + state need {shared} B of shared memory per block, "
                                 f"the device allows {limits.shared_bytes} B")
    if force == "persistent":
        return persistent._replace(why="forced by RNNBACKENDS_CUPY_PATH=persistent")
    if B > limits.persistent_max_batch:
        return Path("graph", why=f"B = {B} > {limits.persistent_max_batch} (large batches are GEMM-bound)")
    return persistent._replace(why=f"B = {B} ≤ {limits.persistent_max_batch} and {shared} B fit on-chip")


def i32(v):
    """A kernel's int parameter."""
    return np.int32(v)


# -- (a) persistent ----------------------------------------------------------------------------------
def forward_persistent(dev, path, zx, a0, w_a, lengths, relu):
    """A (T, B, H) from ZX = X·W_X + b_A (T, B, H), A_0 (B, H), W_A (H, H): one launch for all steps."""
    T, B, H = zx.shape
    a = dev.xp.empty_like(zx)
    dev.kernel("rnn_forward_persistent", zx.dtype)(
        (path.blocks,), (path.threads,),
        (zx, a0, w_a, lengths, a, i32(T), i32(B), i32(H), i32(path.cols), i32(relu)),
        shared_mem=path.shared_bytes)
    return a


def backward_persistent(dev, path, d_a, d_a_n, a, w_a, lengths, relu):
    """dZ (T, B, H) and dA_0 (B, H) from dL/dA (T, B, H), dL/dA_n (B, H): one launch for all steps."""
    T, B, H = a.shape
    dz = dev.xp.empty_like(a)
    d_a0 = dev.xp.empty((B, H), dtype=a.dtype)
    dev.kernel("rnn_backward_persistent", a.dtype)(
        (path.blocks,), (path.threads,),
        (d_a, d_a_n, a, w_a, lengths, dz, d_a0, i32(T), i32(B), i32(H), i32(path.cols), i32(relu)),
        shared_mem=path.shared_bytes)
    return dz, d_a0


# -- (b) per-step GEMM + fused kernel, captured in a graph -----------------------------------------------
class _Plan:
    """Device buffers of one shape and the captured loop over them; run() copies in, replays, copies out."""

    def __init__(self, dev, shapes, dtype, steps):
        self.buf = {name: dev.xp.zeros(shape, dtype=np.int32 if name == "lengths" else dtype)
                    for name, shape in shapes.items()}
        self.steps = lambda: steps(self.buf)
        try:
            self.graph = dev.capture(self.steps)
        except Exception as exc:  # a CUDA driver that cannot capture this: run the loop eagerly instead
            log.warning("CUDA graph capture failed (%s: %s); running the per-step loop uncaptured",
                        type(exc).__name__, exc)
            self.graph = None

    def run(self, **inputs):
        for name, value in inputs.items():
            self.buf[name][...] = value
        if self.graph is None:
            self.steps()
        else:
            self.graph.launch()


_plans = collections.OrderedDict()
MAX_PLANS = 4


def _plan(dev, key, make):
    if key not in _plans:
        _plans[key] = make()
        while len(_plans) > MAX_PLANS:
            _plans.popitem(last=False)
    _plans.move_to_end(key)
    return _plans[key]


def _grid(n):
    return (max(1, min(1024, math.ceil(n / STEP_THREADS))),)


def forward_graph(dev, zx, a0, w_a, lengths, relu):
    """As forward_persistent, as T × (cuBLAS R = A_{t-1}·W_A, then rnn_forward_step) in one graph."""
    T, B, H = zx.shape
    kernel = dev.kernel("rnn_forward_step", zx.dtype)

    def make():
        shapes = {"zx": (T, B, H), "a0": (B, H), "w_a": (H, H), "lengths": (B,), "a": (T, B, H), "r": (B, H)}

        def steps(b):
            for t in range(T):
                dev.gemm(b["a0"] if t == 0 else b["a"][t - 1], b["w_a"], b["r"])           # R = A_{t-1}·W_A
                kernel(_grid(B * H), (STEP_THREADS,),
                       (b["zx"][t], b["r"], b["lengths"], b["a"][t], i32(t), i32(B), i32(H), i32(relu)))

        return _Plan(dev, shapes, zx.dtype, steps)

    plan = _plan(dev, ("forward", id(dev), T, B, H, zx.dtype.str, relu), make)
    plan.run(zx=zx, a0=a0, w_a=w_a, lengths=lengths)
    return plan.buf["a"].copy()


def backward_graph(dev, d_a, d_a_n, a, w_a, lengths, relu):
    """As backward_persistent, as T × (rnn_backward_step, then cuBLAS D = dZ_t·W_Aᵀ) in one graph."""
    T, B, H = a.shape
    kernel = dev.kernel("rnn_backward_step", a.dtype)

    def make():
        shapes = {"d_a": (T, B, H), "d_a_n": (B, H), "a": (T, B, H), "w_a_t": (H, H), "lengths": (B,),
                  "dz": (T, B, H), "d_next": (B, H)}

        def steps(b):
            for t in reversed(range(T)):
                kernel(_grid(B * H), (STEP_THREADS,),
                       (b["d_a"][t], b["d_a_n"], b["a"][t], b["d_next"], b["lengths"], b["dz"][t],
                        i32(t), i32(B), i32(H), i32(relu)))
                dev.gemm(b["dz"][t], b["w_a_t"], b["d_next"])                               # D = dZ_t·W_Aᵀ

        return _Plan(dev, shapes, a.dtype, steps)

    plan = _plan(dev, ("backward", id(dev), T, B, H, a.dtype.str, relu), make)
    # d_next starts at 0 (nothing flows back from beyond step T); the loop leaves dA_0 = dZ_1·W_Aᵀ there.
    plan.run(d_a=d_a, d_a_n=d_a_n, a=a, w_a_t=w_a.T, lengths=lengths, d_next=0)
    return plan.buf["dz"].copy(), plan.buf["d_next"].copy()


def on_path(dev, path, persistent, graph, *args):
    """persistent(dev, path, *args) on the persistent path (a GPU falls back to the graph), else graph(dev, *args)."""
    if path.kind == "persistent":
        try:
            return persistent(dev, path, *args)
        except Exception as exc:
            _persistent_failed(dev, exc)
    return graph(dev, *args)


def forward(dev, path, zx, a0, w_a, lengths, relu):
    """The forward A-chain on the chosen path."""
    return on_path(dev, path, forward_persistent, forward_graph, zx, a0, w_a, lengths, relu)


def backward(dev, path, d_a, d_a_n, a, w_a, lengths, relu):
    """The backward A-chain on the chosen path -> (dZ (T, B, H), dA_0 (B, H))."""
    return on_path(dev, path, backward_persistent, backward_graph, d_a, d_a_n, a, w_a, lengths, relu)


# -- the gated cells: (a) persistent (gated_persistent.cu) ------------------------------------------------------
def _persistent(dev, path, name, dtype, args, T, B, H):
    dev.kernel(name, dtype)((path.blocks,), (path.threads,), (*args, i32(T), i32(B), i32(H), i32(path.cols)),
                            shared_mem=path.shared_bytes)


def gru_forward_persistent(dev, path, zx, a0, w_a, b_r, lengths):
    """A (T, B, H) and saved r, u, n, Z_Rn (T, B, 4H) from ZX = X·W_X + b_A (T, B, 3H): one launch, all steps."""
    T, B, H = zx.shape[0], zx.shape[1], a0.shape[1]
    a, saved = dev.xp.empty((T, B, H), zx.dtype), dev.xp.empty((T, B, 4 * H), zx.dtype)
    _persistent(dev, path, "gru_forward_persistent", zx.dtype, (zx, a0, w_a, b_r, lengths, a, saved), T, B, H)
    return a, saved


def gru_backward_persistent(dev, path, d_a, d_a_n, a, a0, w_a, saved, lengths):
    """dZ_X, dZ_R (T, B, 3H) and dA_0 (B, H): one launch for all steps."""
    T, B, H = a.shape
    dz_x, dz_r = dev.xp.empty((T, B, 3 * H), a.dtype), dev.xp.empty((T, B, 3 * H), a.dtype)
    d_a0 = dev.xp.empty((B, H), a.dtype)
    _persistent(dev, path, "gru_backward_persistent", a.dtype,
                (d_a, d_a_n, a, a0, w_a, saved, lengths, dz_x, dz_r, d_a0), T, B, H)
    return dz_x, dz_r, d_a0


def lstm_forward_persistent(dev, path, zx, a0, c0, w_a, b_r, lengths):
    """A, C (T, B, H) and the gates i, f, g, o (T, B, 4H) from ZX (T, B, 4H): one launch for all steps."""
    T, B, H = zx.shape[0], zx.shape[1], a0.shape[1]
    a, c, gates = (dev.xp.empty(s, zx.dtype) for s in ((T, B, H), (T, B, H), (T, B, 4 * H)))
    _persistent(dev, path, "lstm_forward_persistent", zx.dtype, (zx, a0, c0, w_a, b_r, lengths, a, c, gates),
                T, B, H)
    return a, c, gates


def lstm_backward_persistent(dev, path, d_a, d_a_n, d_c_n, c, c0, w_a, gates, lengths):
    """dZ (T, B, 4H), dA_0 and dC_0 (B, H): one launch for all steps."""
    T, B, H = c.shape
    dz = dev.xp.empty((T, B, 4 * H), c.dtype)
    d_a0, d_c0 = dev.xp.empty((B, H), c.dtype), dev.xp.empty((B, H), c.dtype)
    _persistent(dev, path, "lstm_backward_persistent", c.dtype,
                (d_a, d_a_n, d_c_n, c, c0, w_a, gates, lengths, dz, d_a0, d_c0), T, B, H)
    return dz, d_a0, d_c0


# -- the gated cells: (b) per-step GEMM for all gates + fused gate kernel (gated_step.cu), in a graph -------------
def gru_forward_graph(dev, zx, a0, w_a, b_r, lengths):
    """As gru_forward_persistent, as T × (cuBLAS R = A_{t-1}·W_A (B, 3H), then gru_forward_step) in one graph."""
    T, B, H = zx.shape[0], zx.shape[1], a0.shape[1]
    kernel = dev.kernel("gru_forward_step", zx.dtype)

    def make():
        shapes = {"zx": (T, B, 3 * H), "a0": (B, H), "w_a": (H, 3 * H), "b_r": (3 * H,), "lengths": (B,),
                  "a": (T, B, H), "saved": (T, B, 4 * H), "r": (B, 3 * H)}

        def steps(b):
            for t in range(T):
                a_prev = b["a0"] if t == 0 else b["a"][t - 1]
                dev.gemm(a_prev, b["w_a"], b["r"])                                          # R = A_{t-1}·W_A
                kernel(_grid(B * H), (STEP_THREADS,), (b["zx"][t], b["r"], b["b_r"], a_prev, b["lengths"],
                                                       b["a"][t], b["saved"][t], i32(t), i32(B), i32(H)))

        return _Plan(dev, shapes, zx.dtype, steps)

    plan = _plan(dev, ("gru_forward", id(dev), T, B, H, zx.dtype.str), make)
    plan.run(zx=zx, a0=a0, w_a=w_a, b_r=b_r, lengths=lengths)
    return plan.buf["a"].copy(), plan.buf["saved"].copy()


def gru_backward_graph(dev, d_a, d_a_n, a, a0, w_a, saved, lengths):
    """As gru_backward_persistent, as T × (gru_backward_step, then cuBLAS D = dZ_R,t·W_Aᵀ) in one graph."""
    T, B, H = a.shape
    kernel = dev.kernel("gru_backward_step", a.dtype)

    def make():
        shapes = {"d_a": (T, B, H), "d_a_n": (B, H), "a": (T, B, H), "a0": (B, H), "saved": (T, B, 4 * H),
                  "w_a_t": (3 * H, H), "lengths": (B,), "dz_x": (T, B, 3 * H), "dz_r": (T, B, 3 * H),
                  "d_next": (B, H), "keep": (B, H)}

        def steps(b):
            for t in reversed(range(T)):
                kernel(_grid(B * H), (STEP_THREADS,),
                       (b["d_a"][t], b["d_a_n"], b["a0"] if t == 0 else b["a"][t - 1], b["saved"][t], b["d_next"],
                        b["keep"], b["lengths"], b["dz_x"][t], b["dz_r"][t], i32(t), i32(B), i32(H)))
                dev.gemm(b["dz_r"][t], b["w_a_t"], b["d_next"])                            # D = dZ_R,t·W_Aᵀ

        return _Plan(dev, shapes, a.dtype, steps)

    plan = _plan(dev, ("gru_backward", id(dev), T, B, H, a.dtype.str), make)
    plan.run(d_a=d_a, d_a_n=d_a_n, a=a, a0=a0, saved=saved, w_a_t=w_a.T, lengths=lengths, d_next=0, keep=0)
    b = plan.buf
    return b["dz_x"].copy(), b["dz_r"].copy(), b["keep"] + b["d_next"]           # dA_0 = (g ⊙ u)_1 + dZ_R,1·W_Aᵀ


def lstm_forward_graph(dev, zx, a0, c0, w_a, b_r, lengths):
    """As lstm_forward_persistent, as T × (cuBLAS R = A_{t-1}·W_A (B, 4H), then lstm_forward_step) in one graph."""
    T, B, H = zx.shape[0], zx.shape[1], a0.shape[1]
    kernel = dev.kernel("lstm_forward_step", zx.dtype)

    def make():
        shapes = {"zx": (T, B, 4 * H), "a0": (B, H), "c0": (B, H), "w_a": (H, 4 * H), "b_r": (4 * H,),
                  "lengths": (B,), "a": (T, B, H), "c": (T, B, H), "gates": (T, B, 4 * H), "r": (B, 4 * H)}

        def steps(b):
            for t in range(T):
                dev.gemm(b["a0"] if t == 0 else b["a"][t - 1], b["w_a"], b["r"])            # R = A_{t-1}·W_A
                kernel(_grid(B * H), (STEP_THREADS,),
                       (b["zx"][t], b["r"], b["b_r"], b["c0"] if t == 0 else b["c"][t - 1], b["lengths"],
                        b["a"][t], b["c"][t], b["gates"][t], i32(t), i32(B), i32(H)))

        return _Plan(dev, shapes, zx.dtype, steps)

    plan = _plan(dev, ("lstm_forward", id(dev), T, B, H, zx.dtype.str), make)
    plan.run(zx=zx, a0=a0, c0=c0, w_a=w_a, b_r=b_r, lengths=lengths)
    return plan.buf["a"].copy(), plan.buf["c"].copy(), plan.buf["gates"].copy()


def lstm_backward_graph(dev, d_a, d_a_n, d_c_n, c, c0, w_a, gates, lengths):
    """As lstm_backward_persistent, as T × (lstm_backward_step, then cuBLAS D = dZ_t·W_Aᵀ) in one graph."""
    T, B, H = c.shape
    kernel = dev.kernel("lstm_backward_step", c.dtype)

    def make():
        shapes = {"d_a": (T, B, H), "d_a_n": (B, H), "d_c_n": (B, H), "c": (T, B, H), "c0": (B, H),
                  "gates": (T, B, 4 * H), "w_a_t": (4 * H, H), "lengths": (B,), "dz": (T, B, 4 * H),
                  "d_next": (B, H), "carry_c": (B, H)}

        def steps(b):
            for t in reversed(range(T)):
                kernel(_grid(B * H), (STEP_THREADS,),
                       (b["d_a"][t], b["d_a_n"], b["d_c_n"], b["c"][t], b["c0"] if t == 0 else b["c"][t - 1],
                        b["gates"][t], b["d_next"], b["carry_c"], b["lengths"], b["dz"][t], i32(t), i32(B), i32(H)))
                dev.gemm(b["dz"][t], b["w_a_t"], b["d_next"])                              # D = dZ_t·W_Aᵀ

        return _Plan(dev, shapes, c.dtype, steps)

    plan = _plan(dev, ("lstm_backward", id(dev), T, B, H, c.dtype.str), make)
    plan.run(d_a=d_a, d_a_n=d_a_n, d_c_n=d_c_n, c=c, c0=c0, gates=gates, w_a_t=w_a.T, lengths=lengths,
             d_next=0, carry_c=0)
    return plan.buf["dz"].copy(), plan.buf["d_next"].copy(), plan.buf["carry_c"].copy()


def _persistent_failed(dev, exc):
    """On a GPU, a persistent kernel that cannot compile or launch turns that path off (logged); emulated, it raises."""
    if dev.limits.emulated:
        raise exc
    dev.limits = dev.limits._replace(cooperative=False)
    dev.persistent_error = f"{type(exc).__name__}: {exc}"
    log.warning("the persistent (cooperative) A-chain kernel failed on this device (%s); using the per-step "
                "graph path from now on", dev.persistent_error)
