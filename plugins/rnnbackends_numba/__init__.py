"""The Numba CPU backend's registration (entry point ``numba``); numba is imported only when selected."""
from rnnbackends import BACKEND_API_VERSION, BackendSpec, hookimpl


@hookimpl
def rnnbackends_register_backends(register):
    """Register the numba backend: above numpy, below cupy."""
    register(BackendSpec(name="numba", api_version=BACKEND_API_VERSION, priority=20, device="cpu",
                         factory="rnnbackends_numba.backend:NumbaBackend",
                         description="CPU kernels compiled with Numba @njit"))
