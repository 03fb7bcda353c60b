"""The contract on PyTorch: forward through ``torch.nn.RNN`` on packed sequences, backward by autograd.

PyTorch's names map to the lecture's as weight_ih_l0 = W_Xᵀ, weight_hh_l0 = W_Aᵀ, bias_ih_l0 + bias_hh_l0 = b_A.
"""
import numpy as np


class TorchBackend:
    """numpy arrays in and out on the CPU; cupy arrays (via DLPack) when torch sees a CUDA device."""

    name = "torch"
    capabilities = frozenset({"tanh", "relu", "float32", "float64", "lengths"})

    @classmethod
    def availability(cls):
        """Available wherever torch imports."""
        try:
            import torch
        except Exception as exc:
            return False, f"torch is not importable ({type(exc).__name__}: {exc}); pip install torch"
        where = "CUDA" if cls._use_cuda() else "CPU"
        return True, f"torch {torch.__version__} on the {where}"

    @staticmethod
    def _use_cuda():
        import torch

        if not torch.cuda.is_available():
            return False
        try:
            import cupy  # noqa: F401  arrays on the GPU travel as cupy through DLPack
        except Exception:
            return False
        return True

    def __init__(self):
        import torch

        self.torch = torch
        if self._use_cuda():
            import cupy

            self.xp, self.device = cupy, torch.device("cuda")
        else:
            self.xp, self.device = np, torch.device("cpu")

    def _tensor(self, array, grad=False):
        t = self.torch.from_dlpack(array) if self.xp is not np else self.torch.from_numpy(array)
        return t.to(self.device).detach().clone().requires_grad_(grad)

    def _array(self, tensor):
        tensor = tensor.detach().contiguous()
        return self.xp.from_dlpack(tensor) if self.xp is not np else tensor.cpu().numpy()

    def forward_sequence(self, x, a0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh"):
        """A_t = g(X_t·W_X + A_{t-1}·W_A + b_A) via nn.RNN -> (a (T,B,H), a_n (B,H), saved)."""
        torch = self.torch
        pack = torch.nn.utils.rnn
        T, B, D = x.shape
        H = w_a.shape[0]
        leaves = [self._tensor(v, grad=True) for v in (x, a0, w_x, w_a, b_a)]
        x_t, a0_t, w_x_t, w_a_t, b_a_t = leaves
        rnn = torch.nn.RNN(D, H, nonlinearity=nonlinearity, device="meta")
        params = {"weight_ih_l0": w_x_t.T, "weight_hh_l0": w_a_t.T,
                  "bias_ih_l0": b_a_t, "bias_hh_l0": torch.zeros_like(b_a_t)}
        lens = torch.full((B,), T, dtype=torch.int64) if lengths is None else torch.from_numpy(lengths)
        packed = pack.pack_padded_sequence(x_t, lens, enforce_sorted=False)
        out, a_n = torch.func.functional_call(rnn, params, (packed, a0_t[None]))
        a, _ = pack.pad_packed_sequence(out, total_length=T)        # zeros after each row's length
        a_n = a_n[0]                                                # (B, H): each row's last valid state
        return self._array(a), self._array(a_n), (leaves, a, a_n)

    def backward_sequence(self, saved, d_a, d_a_n=None):
        """Autograd through the saved graph -> (d_x, d_a0, d_w_x, d_w_a, d_b_a)."""
        leaves, a, a_n = saved
        outputs, grad_outputs = [a], [self._tensor(d_a)]
        if d_a_n is not None:
            outputs.append(a_n)
            grad_outputs.append(self._tensor(d_a_n))
        grads = self.torch.autograd.grad(outputs, leaves, grad_outputs, retain_graph=True,
                                         allow_unused=True)
        return tuple(self._array(g if g is not None else self.torch.zeros_like(v))
                     for g, v in zip(grads, leaves))
