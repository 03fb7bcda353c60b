"""Acoustic models for CTC: a stacked bidirectional RNN over (subsampled) audio frames, and a per-frame baseline."""
from __future__ import annotations

import numpy as np

from ..layers import GATES, RNN, Dense, Dropout, Layer
from ..models import MODELS, Model

CELLS = tuple(GATES)                                  # the recurrent cells the RNN layer has: rnn, gru, lstm


def config_of(arguments):
    """A model's constructor arguments without the ones a checkpoint does not keep."""
    return {k: v for k, v in arguments.items() if k not in ("self", "backend", "dtype", "seed", "__class__")}


def output_lengths(lengths, stride):
    """Frames per utterance after stacking ``stride`` frames into one step: ceil(length / stride)."""
    return -(-np.asarray(lengths, dtype=np.int64) // stride)


class FrameStack(Layer):
    """Stacks ``stride`` consecutive frames into one step: X (T, B, F) -> (ceil(T/stride), B, stride·F)."""

    def __init__(self, stride, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        self.stride = stride

    def forward(self, x):
        """X (T, B, F) -> (T', B, stride·F), zero frames appended to make T a multiple of stride."""
        T, B, F = x.shape
        steps = -(-T // self.stride)
        self.shape = x.shape
        padded = self.xp.zeros((steps * self.stride, B, F), dtype=x.dtype)
        padded[:T] = x
        return padded.reshape(steps, self.stride, B, F).transpose(0, 2, 1, 3).reshape(steps, B, self.stride * F)

    def backward(self, d_y):
        """dL/dY (T', B, stride·F) -> dL/dX (T, B, F)."""
        T, B, F = self.shape
        steps = d_y.shape[0]
        return d_y.reshape(steps, B, self.stride, F).transpose(0, 2, 1, 3).reshape(steps * self.stride, B, F)[:T]


class Tanh(Layer):
    """tanh, elementwise."""

    def forward(self, z):
        """z (...) -> tanh z."""
        self.y = self.xp.tanh(z)
        return self.y

    def backward(self, d_y):
        """dL/dz = dL/dy ⊙ (1 - y²)."""
        return d_y * (1.0 - self.y * self.y)


class SpeechRecognizer(Model):
    """Many-to-many of different, unaligned lengths: audio features (T, B, F) -> frames stacked by ``stride`` ->
    stacked (bidirectional) RNN -> Dropout -> Dense on every step -> CTC logits (T', B, K+1), blank = 0."""

    def __init__(self, num_features, num_labels, hidden_size=128, num_layers=3, bidirectional=True, stride=3,
                 dropout=0.0, cell="rnn", nonlinearity="tanh", backend=None, dtype="float32", seed=0):
        super().__init__(config_of(locals()), backend, dtype, seed)
        if cell not in CELLS:
            raise ValueError(f"--cell {cell!r}: choose one of {', '.join(CELLS)}")
        self.stride = stride
        self.stack = self.add("stack", FrameStack(stride, **self.common()))
        self.rnn = self.add("rnn", RNN(num_features * stride, hidden_size, num_layers, bidirectional, nonlinearity,
                                       dropout, rng=self.rng, cell=cell, **self.common()))
        self.dropout = self.add("dropout", Dropout(dropout, self.rng, **self.common()))
        self.output = self.add("output", Dense(hidden_size * self.rnn.directions, num_labels + 1, rng=self.rng,
                                               **self.common()))

    def output_lengths(self, lengths):
        """Output steps per utterance for input frame counts ``lengths`` (B,)."""
        return output_lengths(lengths, self.stride)

    def forward(self, x, lengths=None):
        """X (T, B, F), lengths (B,) in frames -> logits (T', B, K+1); padding steps are masked in the loss."""
        x = self.stack.forward(self.xp.asarray(x, dtype=self.dtype))                       # (T', B, stride·F)
        steps = None if lengths is None else self.output_lengths(lengths)
        return self.output.forward(self.dropout.forward(self.rnn.forward(x, steps)))       # (T', B, K+1)

    def backward(self, d_logits):
        """dL/dlogits (T', B, K+1) -> gradients of every layer."""
        self.stack.backward(self.rnn.backward(self.dropout.backward(self.output.backward(d_logits))))


class FrameClassifier(Model):
    """The baseline without recurrence: each output step sees only its own stacked frames (``stride`` of them,
    widened by ``context`` steps either side) -> Dense -> tanh -> Dense -> CTC logits (T', B, K+1)."""

    def __init__(self, num_features, num_labels, hidden_size=256, stride=3, context=2, backend=None,
                 dtype="float32", seed=0):
        super().__init__(config_of(locals()), backend, dtype, seed)
        self.stride, self.context = stride, context
        width = num_features * stride * (2 * context + 1)
        self.stack = self.add("stack", FrameStack(stride, **self.common()))
        self.hidden = self.add("hidden", Dense(width, hidden_size, rng=self.rng, **self.common()))
        self.tanh = self.add("tanh", Tanh(**self.common()))
        self.output = self.add("output", Dense(hidden_size, num_labels + 1, rng=self.rng, **self.common()))

    def output_lengths(self, lengths):
        """Output steps per utterance for input frame counts ``lengths`` (B,)."""
        return output_lengths(lengths, self.stride)

    def forward(self, x, lengths=None):
        """X (T, B, F) -> logits (T', B, K+1)."""
        x = self.stack.forward(self.xp.asarray(x, dtype=self.dtype))                       # (T', B, stride·F)
        c = self.context
        padded = self.xp.pad(x, ((c, c), (0, 0), (0, 0)))
        window = self.xp.concatenate([padded[i:i + x.shape[0]] for i in range(2 * c + 1)], axis=2)
        return self.output.forward(self.tanh.forward(self.hidden.forward(window)))

    def backward(self, d_logits):
        """dL/dlogits -> gradients (the input's gradient is not needed)."""
        self.hidden.backward(self.tanh.backward(self.output.backward(d_logits)))


for _model in (SpeechRecognizer, FrameClassifier):                                 # so checkpoints rebuild them
    MODELS.setdefault(_model.__name__, _model)
