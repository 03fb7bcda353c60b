"""The NumPy reference backend's registration (entry point ``numpy`` in group ``rnnbackends``)."""
from rnnbackends import BACKEND_API_VERSION, BackendSpec, hookimpl


@hookimpl
def rnnbackends_register_backends(register):
    """Register the reference backend: lowest priority, always available."""
    register(BackendSpec(name="numpy", api_version=BACKEND_API_VERSION, priority=0, device="cpu",
                         factory="rnnbackends_numpy.backend:NumpyBackend",
                         description="reference: the lecture's equations in NumPy"))
