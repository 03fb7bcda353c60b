"""Registers the NumPy reference (rnnbackends.reference) as backend ``numpy`` (entry point group ``rnnbackends``)."""
from rnnbackends import BACKEND_API_VERSION, BackendSpec, hookimpl


@hookimpl
def rnnbackends_register_backends(register):
    """Register the reference backend: lowest priority, always available."""
    register(BackendSpec(name="numpy", api_version=BACKEND_API_VERSION, priority=0, device="cpu",
                         factory="rnnbackends.reference:ReferenceBackend",
                         description="reference: the lecture's equations in NumPy"))
