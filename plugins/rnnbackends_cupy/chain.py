"""The sequential A-chain on the device, two ways, and the choice between them.

(a) persistent: one cooperative launch of persistent.cu for all T steps (small batches, W_A slices fit
    in shared memory); (b) graph: per step one cuBLAS GEMM plus one fused step.cu kernel, the whole loop
    captured once per shape in a CUDA graph and replayed (large batches, or W_A too big for on-chip).
Everything outside the chain (input projection, weight gradients) is in backend.py.
"""
from __future__ import annotations

import collections
import logging
import math
import os
from typing import NamedTuple

import numpy as np

log = logging.getLogger("rnnbackends.cupy")

ROWS = 4          # batch rows per persistent work item (persistent.cu's ROWS)
STEP_THREADS = 256


class Path(NamedTuple):
    """How one (B, H, dtype) runs: kind 'persistent' or 'graph', and the persistent launch geometry."""

    kind: str
    blocks: int = 0        # persistent grid: block i owns H-columns [i*cols, (i+1)*cols)
    cols: int = 0
    threads: int = 0
    shared_bytes: int = 0  # W_A slice (cols, H) + staged state (B, H)
    why: str = ""


def choose_path(B, H, itemsize, limits, force=None) -> Path:
    """Persistent when the device can co-schedule the grid and its W_A slices fit on-chip and B is small."""
    force = force or os.environ.get("RNNBACKENDS_CUPY_PATH", "auto")
    if force not in ("auto", "persistent", "graph"):
        raise ValueError(f"RNNBACKENDS_CUPY_PATH must be auto, persistent or graph, got {force!r}")
    groups = math.ceil(B / ROWS)
    # columns per block: enough blocks to hold H, but at least one work item per warp (fewer blocks at
    # small H make the per-step grid barrier cheaper)
    cols = min(H, max(math.ceil(H / limits.blocks), math.ceil(limits.threads // 32 / groups)))
    blocks = math.ceil(H / cols)
    shared = (cols * H + B * H) * itemsize
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


def forward(dev, path, zx, a0, w_a, lengths, relu):
    """The forward A-chain on the chosen path."""
    if path.kind == "persistent":
        try:
            return forward_persistent(dev, path, zx, a0, w_a, lengths, relu)
        except Exception as exc:
            _persistent_failed(dev, exc)
    return forward_graph(dev, zx, a0, w_a, lengths, relu)


def backward(dev, path, d_a, d_a_n, a, w_a, lengths, relu):
    """The backward A-chain on the chosen path -> (dZ (T, B, H), dA_0 (B, H))."""
    if path.kind == "persistent":
        try:
            return backward_persistent(dev, path, d_a, d_a_n, a, w_a, lengths, relu)
        except Exception as exc:
            _persistent_failed(dev, exc)
    return backward_graph(dev, d_a, d_a_n, a, w_a, lengths, relu)


def _persistent_failed(dev, exc):
    """On a GPU, a persistent kernel that cannot compile or launch turns that path off (logged); emulated, it raises."""
    if dev.limits.emulated:
        raise exc
    dev.limits = dev.limits._replace(cooperative=False)
    dev.persistent_error = f"{type(exc).__name__}: {exc}"
    log.warning("the persistent (cooperative) A-chain kernel failed on this device (%s); using the per-step "
                "graph path from now on", dev.persistent_error)
