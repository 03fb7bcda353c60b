"""Weights to and from PyTorch's ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` naming.

weight_ih_l{k} = W_Xᵀ, weight_hh_l{k} = W_Aᵀ, bias_ih_l{k} = b_A, bias_hh_l{k} = b_R, with the gates side by side
in PyTorch's order (GRU r, z, n; LSTM i, f, g, o) and ``_reverse`` for the backward direction. The simple cell
keeps one bias, b_A = bias_ih + bias_hh.
"""
from __future__ import annotations

import numpy as np

from .arrays import to_host


def to_torch_rnn_params(w_x, w_a, b_a, layer=0, suffix="", b_r=None):
    """(W_X (D,G·H), W_A (H,G·H), b_A, b_R or None) -> state-dict entries (numpy) for layer ``layer``."""
    w_x, w_a, b_a = to_host(w_x), to_host(w_a), to_host(b_a)
    tag = f"l{layer}{suffix}"
    return {f"weight_ih_{tag}": np.ascontiguousarray(w_x.T), f"weight_hh_{tag}": np.ascontiguousarray(w_a.T),
            f"bias_ih_{tag}": b_a.copy(), f"bias_hh_{tag}": np.zeros_like(b_a) if b_r is None else to_host(b_r).copy()}


def from_torch_rnn_params(state, layer=0, suffix="", cell="rnn"):
    """State-dict entries (tensors or arrays) -> (W_X, W_A, b_A) for the simple cell (b_A = bias_ih + bias_hh),
    (W_X, W_A, b_A, b_R) for a gated one."""
    tag = f"l{layer}{suffix}"
    w_x = np.ascontiguousarray(to_host(state[f"weight_ih_{tag}"]).T)
    w_a = np.ascontiguousarray(to_host(state[f"weight_hh_{tag}"]).T)
    b_a, b_r = to_host(state[f"bias_ih_{tag}"]), to_host(state[f"bias_hh_{tag}"])
    return (w_x, w_a, b_a + b_r) if cell == "rnn" else (w_x, w_a, b_a.copy(), b_r.copy())


def to_torch_state_dict(rnn):
    """Every layer and direction of an ``rnnbackends.layers.RNN`` as nn.RNN/GRU/LSTM state-dict entries (numpy)."""
    state = {}
    for layer in range(rnn.num_layers):
        for direction in range(rnn.directions):
            key = rnn.key(layer, direction)
            state.update(to_torch_rnn_params(*(rnn.params[f"{name}_{key}"] for name in ("w_x", "w_a", "b_a")),
                                             layer, "_reverse" if direction else "", rnn.params.get(f"b_r_{key}")))
    return state


def load_torch_state_dict(rnn, state):
    """Set an ``rnnbackends.layers.RNN``'s weights from an nn.RNN/GRU/LSTM state dict of the same shape."""
    for layer in range(rnn.num_layers):
        for direction in range(rnn.directions):
            key = rnn.key(layer, direction)
            values = from_torch_rnn_params(state, layer, "_reverse" if direction else "", rnn.cell)
            for name, value in zip(("w_x", "w_a", "b_a", "b_r"), values):
                old = rnn.params[f"{name}_{key}"]
                if tuple(value.shape) != tuple(old.shape):
                    raise ValueError(f"{name}_{key}: the state dict gives shape {tuple(value.shape)}, the layer "
                                     f"has {tuple(old.shape)}")
                rnn.params[f"{name}_{key}"] = rnn.xp.asarray(np.asarray(value, dtype=rnn.dtype))
