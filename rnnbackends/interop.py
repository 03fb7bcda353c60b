"""Weights to and from PyTorch's ``nn.RNN`` naming (one layer, one direction)."""
from __future__ import annotations

import numpy as np

from .arrays import to_host


def to_torch_rnn_params(w_x, w_a, b_a, layer=0, suffix=""):
    """(W_X (D,H), W_A (H,H), b_A (H,)) -> nn.RNN state-dict entries (numpy) for layer ``layer``.

    weight_ih = W_Xᵀ, weight_hh = W_Aᵀ, bias_ih = b_A, bias_hh = 0 (PyTorch adds the two biases).
    """
    w_x, w_a, b_a = to_host(w_x), to_host(w_a), to_host(b_a)
    tag = f"l{layer}{suffix}"
    return {f"weight_ih_{tag}": np.ascontiguousarray(w_x.T), f"weight_hh_{tag}": np.ascontiguousarray(w_a.T),
            f"bias_ih_{tag}": b_a.copy(), f"bias_hh_{tag}": np.zeros_like(b_a)}


def from_torch_rnn_params(state, layer=0, suffix=""):
    """nn.RNN state-dict entries (tensors or arrays) -> (W_X (D,H), W_A (H,H), b_A = bias_ih + bias_hh)."""
    tag = f"l{layer}{suffix}"
    w_x = np.ascontiguousarray(to_host(state[f"weight_ih_{tag}"]).T)
    w_a = np.ascontiguousarray(to_host(state[f"weight_hh_{tag}"]).T)
    b_a = to_host(state[f"bias_ih_{tag}"]) + to_host(state[f"bias_hh_{tag}"])
    return w_x, w_a, b_a
