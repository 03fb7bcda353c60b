"""The CUDA backend: CuPy arrays, cuBLAS for the all-steps GEMMs, raw CUDA kernels for the A-chain.

Structured as the NumPy reference (rnnbackends_numpy/backend.py): the input projection X·W_X is one GEMM
over all steps; only the A-chain is sequential, and it runs on the device either as one persistent
cooperative kernel (small batches) or as a CUDA graph of per-step cuBLAS GEMMs + fused kernels
(chain.py picks by shape and device limits); after it, d_w_x, d_w_a, d_x and d_b_a are one GEMM or
reduction each. No atomics in any reduction: repeated calls are bit-identical.

RNNBACKENDS_CUPY_EMULATE=1 runs all of it on the CPU: xp = numpy, GEMMs through NumPy, every kernel
through the fiber emulator (emulator.cpp), with small pretended device limits (device.EMULATED_LIMITS).
"""
import functools

import numpy as np

from . import chain
from .device import emulate_requested


def _device():
    from .device import get_device

    return get_device()  # imports cupy only now, when the backend is used


class CupyBackend:
    """A-chain kernels in persistent.cu / step.cu, everything else through CuPy (cuBLAS)."""

    name = "cupy"
    capabilities = frozenset({"tanh", "relu", "float32", "float64", "lengths"})

    def __init__(self, device=None):
        self._device = device
        self.xp = self.device.xp  # cupy on a GPU, numpy under emulation

    @property
    def device(self):
        """The given device, else this call's (the current CUDA device, or the emulator)."""
        return self._device or _device()

    @classmethod
    @functools.cache
    def availability(cls):
        """Whether the CUDA backend can run here, and why (never raises)."""
        try:
            return _availability()
        except Exception as exc:  # pragma: no cover - the probe must never raise
            return False, f"availability probe failed: {type(exc).__name__}: {exc}"

    def path(self, B, H, dtype):
        """The A-chain path (chain.Path) this device takes for a batch of B rows of H units."""
        return chain.choose_path(B, H, np.dtype(dtype).itemsize, self.device.limits)

    def forward_sequence(self, x, a0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh"):
        """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) -> (a (T,B,H), a_n (B,H), saved)."""
        xp = self.xp
        T, B, D = x.shape
        H = w_a.shape[0]
        relu = nonlinearity == "relu"
        lens = xp.asarray(np.full(B, T) if lengths is None else lengths, dtype=np.int32)  # (B,) on device
        z_x = (x.reshape(T * B, D) @ w_x).reshape(T, B, H)          # X_t·W_X, all steps in one GEMM
        z_x += b_a
        path = self.path(B, H, x.dtype)
        a = chain.forward(self.device, path, z_x, a0, w_a, lens, relu)  # the sequential A-chain (T, B, H)
        last = np.full(B, T - 1) if lengths is None else lengths - 1
        a_n = a[xp.asarray(last), xp.arange(B)]                     # each row's last valid state (B, H)
        return a, a_n, (x, a0, w_x, w_a, a, lens, relu, path)

    def backward_sequence(self, saved, d_a, d_a_n=None):
        """BPTT -> (d_x (T,B,D), d_a0 (B,H), d_w_x (D,H), d_w_a (H,H), d_b_a (H,))."""
        xp = self.xp
        x, a0, w_x, w_a, a, lens, relu, path = saved
        T, B, D = x.shape
        H = w_a.shape[0]
        if d_a_n is None:
            d_a_n = xp.zeros((B, H), dtype=a.dtype)
        # dZ_t for all steps (padding 0, d_a never read there) and dA_0 = dZ_1·W_Aᵀ: the sequential part
        dz, d_a0 = chain.backward(self.device, path, d_a, d_a_n, a, w_a, lens, relu)
        a_prev = xp.concatenate([a0[None], a[:-1]])                 # A_0..A_{T-1} (T, B, H)
        dz2 = dz.reshape(T * B, H)
        d_w_x = x.reshape(T * B, D).T @ dz2                         # one GEMM over all steps
        d_w_a = a_prev.reshape(T * B, H).T @ dz2                    # one GEMM over all steps
        d_b_a = dz2.sum(axis=0)                                     # one reduction (no atomics)
        d_x = (dz2 @ w_x.T).reshape(T, B, D)                        # one GEMM over all steps
        return d_x, d_a0, d_w_x, d_w_a, d_b_a


def _availability():
    if emulate_requested():
        from .emulator import compiler

        if compiler() is None:
            return False, "RNNBACKENDS_CUPY_EMULATE=1 but no C++ compiler (g++) to build the CUDA emulator"
        return True, ("emulated on the CPU (RNNBACKENDS_CUPY_EMULATE=1): NumPy arrays, CUDA kernels "
                      "through the fiber emulator, pretended device limits")
    try:
        import cupy
    except Exception as exc:
        return False, (f"cupy is not installed ({type(exc).__name__}: {exc}); pip install "
                       f"'rnnbackends[cuda12]' or '[cuda13]' on a machine with a CUDA GPU, or set "
                       f"RNNBACKENDS_CUPY_EMULATE=1 to run it on the CPU emulator")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA device/driver: {type(exc).__name__}: {exc}"
    if count == 0:
        return False, "no CUDA device/driver: cupy sees 0 devices"
    try:
        driver, runtime = cupy.cuda.runtime.driverGetVersion(), cupy.cuda.runtime.runtimeGetVersion()
    except Exception as exc:
        return False, f"CUDA driver unusable: {type(exc).__name__}: {exc}"
    if driver < runtime:
        return False, (f"CUDA driver too old: driver supports CUDA {driver // 1000}.{driver % 1000 // 10}, "
                       f"CuPy was built for {runtime // 1000}.{runtime % 1000 // 10}")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, f"CuPy {cupy.__version__} on {name} (sm_{props['major']}{props['minor']}), {count} device(s)"
