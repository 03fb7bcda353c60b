"""The CUDA backend's registration (entry point ``cupy``); cupy is imported only when selected."""
from rnnbackends import BACKEND_API_VERSION, BackendSpec, hookimpl


@hookimpl
def rnnbackends_register_backends(register):
    """Register the cupy backend: the highest priority, when a CUDA device is present."""
    register(BackendSpec(name="cupy", api_version=BACKEND_API_VERSION, priority=30, device="cuda",
                         factory="rnnbackends_cupy.backend:CupyBackend",
                         description="CuPy arrays, raw CUDA kernels and cuBLAS"))
