"""The cupy backend (issue #6): registered now, implemented by its own issue."""
import functools


class CupyBackend:
    """Placeholder that explains why it cannot run: no cupy, no device, or kernels not written yet."""

    name = "cupy"
    capabilities = frozenset({"tanh", "relu", "float32", "float64", "lengths"})

    @classmethod
    @functools.cache
    def availability(cls):
        """Why the CUDA backend cannot run here (never raises)."""
        try:
            import cupy
        except Exception as exc:
            return False, (f"cupy is not installed ({type(exc).__name__}: {exc}); "
                           f"pip install 'rnnbackends[cuda12]' or '[cuda13]' on a machine with a CUDA GPU")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            return False, f"no CUDA device/driver: {type(exc).__name__}: {exc}"
        if count == 0:
            return False, "no CUDA device/driver: cupy sees 0 devices"
        return False, "CUDA kernels not implemented yet: they land with issue #6"
