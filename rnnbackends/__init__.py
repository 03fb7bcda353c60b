"""rnnbackends: the lecture's recurrent networks on pluggable backends (NumPy, Numba, CUDA, yours)."""
from .hookspecs import hookimpl
from .registry import (
    BACKEND_API_VERSION,
    BackendError,
    BackendInfo,
    BackendSpec,
    BackendUnavailableError,
    UnknownBackendError,
    get_backend,
    list_backends,
    selected_backend_name,
    use_backend,
)

__version__ = "0.1.0"

__all__ = [
    "BACKEND_API_VERSION",
    "BackendError",
    "BackendInfo",
    "BackendSpec",
    "BackendUnavailableError",
    "UnknownBackendError",
    "get_backend",
    "hookimpl",
    "list_backends",
    "selected_backend_name",
    "use_backend",
]
