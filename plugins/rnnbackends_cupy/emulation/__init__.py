"""The CUDA backend on the CPU, for tests: every CUDA thread a fiber (emulator.cpp), NumPy arrays and GEMMs.

Test infrastructure, not the product: RNNBACKENDS_CUPY_EMULATE=1 makes the cupy backend use EmulatedDevice, so
the conformance kit and the PyTorch parity tests run the real kernels and host code on a machine without a GPU.
selftest.cu holds the kernels that check the emulator itself; cuda_emulated.cuh is the emulator's half of the
portability header; library.py builds and launches them.
"""
from __future__ import annotations

import functools

import numpy as np

from ..device import CTYPE, KERNEL_MODULE, MODULES, Limits
from .library import EmulatorError, compiler, library

__all__ = ["EMULATED_LIMITS", "EmulatedDevice", "EmulatorError", "compiler", "library"]

# In emulation the limits are pretended small, so that the conformance kit's shapes (B ≤ 8, H ≤ 64)
# run BOTH paths (B ≤ 4 persistent, B > 4 graph) and the persistent kernels span several blocks
# (up to 4, of 2 warps each). 48 KiB of shared memory (a GPU's default without opt-in) holds the LSTM's four
# W_A slices at the kit's largest shape in float64. RNNBACKENDS_CUPY_PATH=persistent|graph forces a path where it fits.
EMULATED_LIMITS = Limits(blocks=4, shared_bytes=48 * 1024, threads=64, persistent_max_batch=4,
                         cooperative=True, emulated=True)


class EmulatedGraph:
    """A recorded sequence of launches and GEMMs, replayed by launch() (what a CUDA graph is on a GPU)."""

    def __init__(self, ops):
        self.ops = ops

    def launch(self):
        """Replay every recorded operation in order."""
        for op in self.ops:
            op()


class EmulatedDevice:
    """The CPU stand-in: NumPy arrays, GEMMs through NumPy, every kernel through the fiber emulator."""

    xp = np
    limits = EMULATED_LIMITS
    name = "CPU emulator"
    persistent_error = None  # the emulator never switches the persistent path off: its errors raise

    def __init__(self, defines=()):
        self.library = library(tuple(defines))
        self._recording = None

    def kernel(self, name, dtype):
        """The launcher of kernel `name` instantiated for `dtype`."""
        expr = f"{name}<{CTYPE[np.dtype(dtype)]}>"
        cooperative = name in KERNEL_MODULE and MODULES[KERNEL_MODULE[name]][1]   # the self-tests are not

        def launch(grid, block, args, shared_mem=0):
            run = functools.partial(self.library.launch, expr, grid, block, args, shared_mem, cooperative)
            self._run(run)

        return launch

    def gemm(self, a, b, out):
        """out = a @ b."""
        self._run(functools.partial(np.matmul, a, b, out=out))

    def capture(self, record):
        """Record what `record()` launches without running it; returns a graph to launch() later."""
        self._recording = []
        try:
            record()
            return EmulatedGraph(self._recording)
        finally:
            self._recording = None

    def _run(self, op):
        if self._recording is not None:
            self._recording.append(op)
        else:
            op()
