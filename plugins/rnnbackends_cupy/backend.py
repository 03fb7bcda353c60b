"""The CUDA backend: a chain backend (rnnbackends.chain) on CuPy arrays, with raw CUDA kernels for the A-chain.

The GEMMs around the chain run through cuBLAS (CuPy); the A-chain runs on the device either as one persistent
cooperative kernel (small batches) or as a CUDA graph of per-step cuBLAS GEMMs + fused kernels (chain.py picks
by shape and device limits). No atomics in any reduction: repeated calls are bit-identical.

RNNBACKENDS_CUPY_EMULATE=1 runs all of it on the CPU: xp = numpy, GEMMs through NumPy, every kernel through the
fiber emulator (emulation/), with small pretended device limits.
"""
import functools

import numpy as np

from rnnbackends.chain import ChainBackend

from . import chain
from .device import emulate_requested


def _device():
    from .device import get_device

    return get_device()  # imports cupy only now, when the backend is used


class CupyBackend(ChainBackend):
    """A-chain kernels in persistent.cu / step.cu (rnn) and gated_persistent.cu / gated_step.cu (gru, lstm),
    everything else through CuPy (cuBLAS)."""

    name = "cupy"
    capabilities = frozenset({"rnn", "gru", "lstm", "tanh", "relu", "float32", "float64", "lengths"})

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

    def path(self, B, H, dtype, cell="rnn"):
        """The A-chain path (chain.Path) this device takes for a batch of B rows of H units of `cell`."""
        return chain.choose_path(B, H, np.dtype(dtype).itemsize, self.device.limits, gates=chain.GATES[cell])

    def rnn_forward_chain(self, z, a0, w_a, b_a, steps, nonlinearity):
        """A_1..A_T (T, B, H) from z = X_t·W_X on the device -> (a, (lengths on the device, path))."""
        T, B, H = z.shape
        z += b_a                                                    # ZX_t = X_t·W_X + b_A
        lens = self.xp.asarray(steps, dtype=np.int32)               # (B,) on the device
        path = self.path(B, H, z.dtype)
        a = chain.forward(self.device, path, z, a0, w_a, lens, nonlinearity == "relu")
        return a, (lens, path)

    def rnn_backward_chain(self, d_a, d_a_n, a, w_a, steps, nonlinearity, chain_saved):
        """dZ_t for all steps (padding 0, d_a never read there) and dA_0 = dZ_1·W_Aᵀ, on the same path."""
        lens, path = chain_saved
        return chain.backward(self.device, path, d_a, d_a_n, a, w_a, lens, nonlinearity == "relu")

    def gru_forward_chain(self, z, a0, w_a, b_a, b_r, steps):
        """GRU A_1..A_T (T, B, H) from z = X_t·W_X (T, B, 3H) -> (a, (lengths, path, r/u/n/Z_Rn (T, B, 4H)))."""
        T, B, G = z.shape
        z += b_a                                                    # Z_X = X_t·W_X + b_A
        lens = self.xp.asarray(steps, dtype=np.int32)
        path = self.path(B, G // 3, z.dtype, "gru")
        a, saved = chain.on_path(self.device, path, chain.gru_forward_persistent, chain.gru_forward_graph,
                                 z, a0, w_a, b_r, lens)
        return a, (lens, path, saved)

    def gru_backward_chain(self, d_a, d_a_n, a, a0, w_a, steps, chain_saved):
        """(dZ_X, dZ_R (T, B, 3H), dA_0 (B, H)) on the forward's path; 0 on padding, d_a never read there."""
        lens, path, saved = chain_saved
        return chain.on_path(self.device, path, chain.gru_backward_persistent, chain.gru_backward_graph,
                             d_a, d_a_n, a, a0, w_a, saved, lens)

    def lstm_forward_chain(self, z, a0, c0, w_a, b_a, b_r, steps):
        """LSTM A_1..A_T (T, B, H), C_n (B, H) from z = X_t·W_X (T, B, 4H) -> (a, c_n, (lengths, path, C, gates))."""
        T, B, G = z.shape
        z += b_a                                                    # Z_X = X_t·W_X + b_A
        lens = self.xp.asarray(steps, dtype=np.int32)
        path = self.path(B, G // 4, z.dtype, "lstm")
        a, c, gates = chain.on_path(self.device, path, chain.lstm_forward_persistent, chain.lstm_forward_graph,
                                    z, a0, c0, w_a, b_r, lens)
        c_n = c[self.xp.asarray(steps - 1), self.xp.arange(B)]     # C at each row's last valid step (B, H)
        return a, c_n, (lens, path, c, gates)

    def lstm_backward_chain(self, d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, chain_saved):
        """(dZ, dZ (T, B, 4H), dA_0, dC_0 (B, H)) on the forward's path (dZ_X = dZ_R for the LSTM)."""
        lens, path, c, gates = chain_saved
        dz, d_a0, d_c0 = chain.on_path(self.device, path, chain.lstm_backward_persistent, chain.lstm_backward_graph,
                                       d_a, d_a_n, d_c_n, c, c0, w_a, gates, lens)
        return dz, dz, d_a0, d_c0


def _availability():
    if emulate_requested():
        from .emulation import compiler

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
    if driver // 1000 < runtime // 1000:                          # minor-version compatibility within a major
        return False, (f"CUDA driver too old: driver supports CUDA {driver // 1000}.{driver % 1000 // 10}, "
                       f"CuPy was built for {runtime // 1000}.{runtime % 1000 // 10}")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return True, f"CuPy {cupy.__version__} on {name} (sm_{props['major']}{props['minor']}), {count} device(s)"
