"""Registration of the ``torch`` backend: cheap, imports no torch."""
from rnnbackends import BACKEND_API_VERSION, BackendSpec, hookimpl


@hookimpl
def rnnbackends_register_backends(register):
    """Register one backend; its class is imported only when it is probed or selected."""
    register(BackendSpec(name="torch", api_version=BACKEND_API_VERSION, priority=5, device="cpu/cuda",
                         factory="rnnbackends_torch.backend:TorchBackend",
                         description="torch.nn.RNN/GRU/LSTM with packed sequences (plugin template)"))
