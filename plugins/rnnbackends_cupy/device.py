"""Where the cupy backend's kernels run: a CUDA device through CuPy (or, for tests, emulation.EmulatedDevice).

Both devices offer the same small vocabulary, so the backend's host code is one code path:
``xp``, ``limits``, ``kernel(name, dtype)(grid, block, args, shared_mem=0)``, ``gemm(a, b, out)`` and
``capture(record) -> graph`` with ``graph.launch()``.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

HERE = Path(__file__).resolve().parent
log = logging.getLogger("rnnbackends.cupy")

# Which .cu file holds which kernel, and whether its module is launched cooperatively (grid_sync inside).
MODULES = {
    "persistent.cu": (("rnn_forward_persistent", "rnn_backward_persistent"), True),
    "step.cu": (("rnn_forward_step", "rnn_backward_step"), False),
    "gated_persistent.cu": (("gru_forward_persistent", "gru_backward_persistent",
                             "lstm_forward_persistent", "lstm_backward_persistent"), True),
    "gated_step.cu": (("gru_forward_step", "gru_backward_step", "lstm_forward_step", "lstm_backward_step"), False),
}
KERNEL_MODULE = {k: f for f, (ks, _) in MODULES.items() for k in ks}
CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
OPTIONS = ("-std=c++17",)  # what RawModule gets (CuPy adds its own: arch, -ftz, --device-c when cooperative)


def name_expressions(filename):
    """The instantiations CuPy asks NVRTC for, e.g. 'rnn_forward_step<float>': every kernel, float and double."""
    return [f"{k}<{t}>" for k in MODULES[filename][0] for t in CTYPE.values()]


class Limits(NamedTuple):
    """The device limits the path choice reads (chain.choose_path)."""

    blocks: int                # blocks a cooperative launch may keep resident (one per SM)
    shared_bytes: int          # dynamic shared memory one block may use
    threads: int               # threads per persistent block (a multiple of 32)
    persistent_max_batch: int  # policy: larger batches take the per-step graph path
    cooperative: bool          # cooperative launch supported
    emulated: bool


def emulate_requested() -> bool:
    """RNNBACKENDS_CUPY_EMULATE=1: run the backend on the CPU emulator."""
    return os.environ.get("RNNBACKENDS_CUPY_EMULATE", "") not in ("", "0")


def kernel_source(filename: str) -> str:
    """A .cu file with its local headers inlined (so CuPy's cache key covers them), without the emulator's half."""
    seen = set()

    def expand(name):
        if name in seen:
            return ""
        seen.add(name)
        text = (HERE / name).read_text()
        text = re.sub(r'^#include "emulation/[^"]+"\s*$', "", text, flags=re.M)    # never taken on a GPU
        return re.sub(r'^#include "([^"]+)"\s*$', lambda m: expand(m.group(1)), text, flags=re.M)

    return expand(filename).replace("#pragma once", "")


class CudaDevice:
    """A CUDA device through CuPy: RawModules compiled lazily per device, cuBLAS GEMMs, CUDA graphs."""

    name = "CUDA"

    def __init__(self):
        import cupy

        self.xp = cupy
        self.cupy = cupy
        self.id = cupy.cuda.Device().id
        props = cupy.cuda.runtime.getDeviceProperties(self.id)
        self.props = props
        self.limits = Limits(blocks=int(props["multiProcessorCount"]),
                             shared_bytes=int(props.get("sharedMemPerBlockOptin", props["sharedMemPerBlock"])),
                             threads=256, persistent_max_batch=32,
                             cooperative=bool(props.get("cooperativeLaunch", 1)), emulated=False)
        self._modules = {}
        self._functions = {}
        self._capture_stream = None
        self._capturing, self._blas = False, None  # captured GEMMs go to our own cuBLAS handle (_captured_gemm)
        self.persistent_error = None  # set if the persistent kernels failed here (chain._persistent_failed)
        self.graphs_enabled = os.environ.get("RNNBACKENDS_CUPY_GRAPHS", "1") not in ("0", "")

    def module(self, filename):
        """The RawModule of one .cu file (compiled by NVRTC on first use, then cached by CuPy on disk)."""
        if filename not in self._modules:
            cooperative = MODULES[filename][1]
            self._modules[filename] = self.cupy.RawModule(
                code=kernel_source(filename), options=OPTIONS, name_expressions=name_expressions(filename),
                enable_cooperative_groups=cooperative)
        return self._modules[filename]

    def kernel(self, name, dtype):
        """The launcher of kernel `name` instantiated for `dtype` (cooperative where the module is)."""
        key = (name, np.dtype(dtype))
        if key not in self._functions:
            fn = self.module(KERNEL_MODULE[name]).get_function(f"{name}<{CTYPE[np.dtype(dtype)]}>")
            self._functions[key] = [fn, 48 * 1024]

        entry = self._functions[key]
        cooperative = MODULES[KERNEL_MODULE[name]][1]

        def launch(grid, block, args, shared_mem=0):
            fn, allowed = entry
            if shared_mem > allowed:  # opt in to more than 48 KiB of dynamic shared memory
                fn.max_dynamic_shared_size_bytes = int(shared_mem)
                entry[1] = int(shared_mem)
            with warnings.catch_warnings():
                if cooperative:  # CuPy shrinks a too-large cooperative grid with a warning: that would
                    warnings.simplefilter("error")  # drop W_A slices, so it must fail (and fall back) instead
                fn(tuple(grid), tuple(block), tuple(args), shared_mem=int(shared_mem))

        return launch

    def gemm(self, a, b, out):
        """out = a @ b through cuBLAS (CuPy's matmul; our own handle while a graph is being captured)."""
        if self._capturing and self._blas is not None and self._blas[3]:
            return self._captured_gemm(a, b, out)
        try:
            self.cupy.matmul(a, b, out=out)
        except NotImplementedError:               # CuPy refuses cuBLAS while a stream captures (before any call)
            if not self._capturing or self._blas is None:
                raise
            self._blas = self._blas[:3] + (True,)
            self._captured_gemm(a, b, out)

    def _captured_gemm(self, a, b, out):
        """out (m, n) = a (m, k) · b (k, n), C-contiguous, by cublas{S,D}gemm on the capturing stream.

        CuPy refuses every cuBLAS call while a stream captures (its cublas.setStream raises), although cuBLAS
        supports capture with a workspace set beforehand: so the graph path calls cuBLAS itself, through ctypes.
        Row-major out = a·b is column-major outᵀ = bᵀ·aᵀ.
        """
        lib, handle = self._cublas()
        (m, k), n = a.shape, b.shape[1]
        if not all(x.flags.c_contiguous for x in (a, b, out)):
            raise ValueError("captured GEMM operands must be C-contiguous")
        scalar, gemm = (ctypes.c_float, lib.cublasSgemm_v2) if a.dtype == np.float32 else \
            (ctypes.c_double, lib.cublasDgemm_v2)
        lib.cublasSetStream_v2(handle, ctypes.c_void_p(self.cupy.cuda.get_current_stream().ptr))
        alpha, beta = scalar(1.0), scalar(0.0)                      # host pointer mode: read at the call
        status = gemm(handle, 0, 0, n, m, k, ctypes.byref(alpha), ctypes.c_void_p(b.data.ptr), n,
                      ctypes.c_void_p(a.data.ptr), k, ctypes.byref(beta), ctypes.c_void_p(out.data.ptr), n)
        if status != 0:
            raise RuntimeError(f"cuBLAS gemm failed during capture (status {status})")

    def _cublas(self):
        """(libcublas, a handle of this device with a 32 MiB workspace of its own), made once."""
        if self._blas is None:
            lib = None
            for soname in ("libcublas.so.13", "libcublas.so.12", "libcublas.so"):   # the one CuPy loaded
                try:
                    lib = ctypes.CDLL(soname)
                    break
                except OSError:
                    continue
            if lib is None:
                raise OSError("libcublas not found for the captured per-step GEMMs")
            handle = ctypes.c_void_p()
            if lib.cublasCreate_v2(ctypes.byref(handle)) != 0:
                raise RuntimeError("cublasCreate failed")
            workspace = self.cupy.empty(32 << 20, dtype=np.uint8)  # capture may not allocate: give it one
            if lib.cublasSetWorkspace_v2(handle, ctypes.c_void_p(workspace.data.ptr), ctypes.c_size_t(32 << 20)):
                raise RuntimeError("cublasSetWorkspace failed")
            self._blas = (lib, handle, workspace, False)   # last: CuPy refused cuBLAS in a capture already
        return self._blas[:2]

    def capture(self, record):
        """Capture what `record()` launches into a CUDA graph (on a side stream); None if graphs are off."""
        if not self.graphs_enabled:
            return None
        record()  # warm-up outside capture: loads modules and sets up cuBLAS (no allocation while capturing)
        self.cupy.cuda.get_current_stream().synchronize()
        if self._capture_stream is None:
            self._capture_stream = self.cupy.cuda.Stream(non_blocking=True)
        stream = self._capture_stream
        try:
            self._cublas()                            # our handle and workspace exist before the capture
        except (OSError, RuntimeError, AttributeError) as exc:
            log.debug("no direct cuBLAS handle for captures (%s); CuPy's matmul is used", exc)
        with stream:
            stream.begin_capture()
            self._capturing = True
            try:
                record()
            finally:
                self._capturing = False
                graph = stream.end_capture()
        return _CudaGraph(graph, self.cupy)


class _CudaGraph:
    """A captured CUDA graph, launched on the caller's current stream."""

    def __init__(self, graph, cupy):
        self.graph, self.cupy = graph, cupy

    def launch(self):
        """Launch the whole captured loop at once."""
        self.graph.launch()  # on CuPy's current stream


def get_device():
    """The device of this call: emulated if RNNBACKENDS_CUPY_EMULATE=1, else CuPy's current device."""
    if emulate_requested():
        return _emulated()
    import cupy

    return _cuda(cupy.cuda.Device().id)


@functools.cache
def _emulated():
    from .emulation import EmulatedDevice

    return EmulatedDevice()


@functools.cache
def _cuda(device_id):
    import cupy

    with cupy.cuda.Device(device_id):
        return CudaDevice()
