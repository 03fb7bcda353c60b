"""The contract on PyTorch: forward through ``torch.nn.RNN``/``GRU``/``LSTM`` on packed sequences, backward by
autograd.

PyTorch's names map to the lecture's as weight_ih_l0 = W_Xᵀ, weight_hh_l0 = W_Aᵀ, bias_ih_l0 = b_A,
bias_hh_l0 = b_R, with the gates side by side in PyTorch's order (GRU r, z, n; LSTM i, f, g, o).
"""
import numpy as np


class TorchBackend:
    """numpy arrays in and out on the CPU; cupy arrays (via DLPack) when torch sees a CUDA device."""

    name = "torch"
    capabilities = frozenset({"rnn", "gru", "lstm", "tanh", "relu", "float32", "float64", "lengths"})

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

    def forward_sequence(self, x, state0, w_x, w_a, b_a, *, lengths=None, nonlinearity="tanh", cell="rnn",
                         b_r=None):
        """The cell over packed sequences via nn.RNN/GRU/LSTM -> (a (T,B,H), state_n, saved)."""
        torch = self.torch
        pack = torch.nn.utils.rnn
        T, B, D = x.shape
        H = w_a.shape[0]
        lstm = cell == "lstm"
        states = tuple(state0) if lstm else (state0,)
        b_r = self.xp.zeros_like(b_a) if b_r is None else b_r      # None: no recurrent bias
        leaves = [self._tensor(v, grad=True) for v in (x, *states, w_x, w_a, b_a, b_r)]
        x_t, *state_t = leaves[:len(states) + 1]
        w_x_t, w_a_t, b_a_t, b_r_t = leaves[len(states) + 1:]
        module = {"rnn": lambda: torch.nn.RNN(D, H, nonlinearity=nonlinearity, device="meta"),
                  "gru": lambda: torch.nn.GRU(D, H, device="meta"),
                  "lstm": lambda: torch.nn.LSTM(D, H, device="meta")}[cell]()
        params = {"weight_ih_l0": w_x_t.T, "weight_hh_l0": w_a_t.T, "bias_ih_l0": b_a_t, "bias_hh_l0": b_r_t}
        lens = torch.full((B,), T, dtype=torch.int64) if lengths is None else torch.from_numpy(lengths)
        packed = pack.pack_padded_sequence(x_t, lens, enforce_sorted=False)
        h0 = tuple(s[None] for s in state_t) if lstm else state_t[0][None]
        out, state_n = torch.func.functional_call(module, params, (packed, h0))
        a, _ = pack.pad_packed_sequence(out, total_length=T)        # zeros after each row's length
        state_n = tuple(s[0] for s in state_n) if lstm else (state_n[0],)   # each row's last valid state(s)
        arrays = tuple(self._array(s) for s in state_n)
        return self._array(a), arrays if lstm else arrays[0], (leaves, len(states), a, state_n)

    def backward_sequence(self, saved, d_a, d_state_n=None):
        """Autograd through the saved graph -> (d_x, d_state0, d_w_x, d_w_a, d_b_a, d_b_r)."""
        leaves, n_states, a, state_n = saved
        outputs, grad_outputs = [a], [self._tensor(d_a)]
        if d_state_n is not None:
            parts = tuple(d_state_n) if n_states == 2 else (d_state_n,)
            outputs += list(state_n)
            grad_outputs += [self._tensor(d) for d in parts]
        grads = self.torch.autograd.grad(outputs, leaves, grad_outputs, retain_graph=True, allow_unused=True)
        grads = [self._array(g if g is not None else self.torch.zeros_like(v)) for g, v in zip(grads, leaves)]
        d_state0 = tuple(grads[1:1 + n_states]) if n_states == 2 else grads[1]
        return (grads[0], d_state0, *grads[1 + n_states:])
