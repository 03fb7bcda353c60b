"""Layers with explicit forward and backward passes (the lecture's style), written once against ``backend.xp``.

Every layer keeps ``params`` and ``grads`` (dicts of arrays of the backend's array module); ``forward`` caches
what ``backward`` needs, and ``backward`` overwrites ``grads`` and returns the gradient for the layer's input.
Sequences are time-major: X (T, B, D) with ``lengths`` (B,) on the host; steps t >= lengths[b] are padding.
Randomness (initial weights, dropout masks) comes from host NumPy Generators, so a seed gives the same run on
every backend.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib

import numpy as np

from . import registry
from .arrays import full_lengths, reverse_index, to_host, valid_steps
from .dispatch import one_blas_thread
from .initializers import initialize


def resolve_backend(backend=None):
    """A backend handle from a handle, a name, or None (the selected backend)."""
    return backend if hasattr(backend, "forward_sequence") else registry.get_backend(backend)


def array_module(array):
    """The array module (numpy or the backend's) that ``array`` belongs to."""
    if isinstance(array, np.ndarray):
        return np
    return importlib.import_module(type(array).__module__.split(".")[0])


# Optional front-end kernels a backend may offer beside the contract (Keras-style): a name in ``capabilities`` and a
# method of that name on the backend's implementation. The front-end calls it when the backend computing the step
# declares it and runs its own ``xp`` code otherwise (docs/plugins.md lists the signatures).
FRONTEND_CAPABILITIES = ("softmax_cross_entropy", "embedding_backward", "adam_update", "matmul")
_COMPUTING_ON = contextvars.ContextVar("rnnbackends_computing_on", default=None)


def kernel(backend, name):
    """The backend's optional front-end kernel ``name`` when it declares it, else None (run the ``xp`` code)."""
    if backend is None or name not in getattr(backend, "capabilities", ()):
        return None
    return getattr(getattr(backend, "impl", backend), name)


@contextlib.contextmanager
def computing_on(backend):
    """Within the block (``fit`` wraps each step in it), losses and optimisers use ``backend``'s front-end kernels,
    and for a backend that runs its own threads (``owns_threads``) NumPy's BLAS stays at one thread throughout, so
    no BLAS worker spins against those threads between the layers (dispatch.one_blas_thread)."""
    token = _COMPUTING_ON.set(backend)
    threads = one_blas_thread if getattr(getattr(backend, "impl", backend), "owns_threads", False) \
        else contextlib.nullcontext()
    try:
        with threads:
            yield backend
    finally:
        _COMPUTING_ON.reset(token)


def active_kernel(name, xp):
    """The kernel ``name`` of the backend set by ``computing_on`` when it works on ``xp`` arrays, else None."""
    backend = _COMPUTING_ON.get()
    return kernel(backend, name) if backend is not None and backend.xp is xp else None


def embedding_gradient(ids, d_rows, vocab_size, padding_idx=None):
    """dL/dweight (V, D) = Σ over positions n holding word v of d_rows[n]: ids (N,) int, d_rows (N, D).

    The ids are sorted (stable), then each distinct word's rows are summed: by NumPy's segment sums, or on other
    array modules as differences of a float64 running sum at the segment ends. Deterministic, no ufunc.at.
    """
    xp = array_module(d_rows)
    grad = xp.zeros((vocab_size, d_rows.shape[1]), dtype=d_rows.dtype)           # (V, D)
    order = xp.argsort(ids, kind="stable") if xp is np else xp.argsort(ids)
    sorted_ids, rows = ids[order], d_rows[order]
    change = sorted_ids[1:] != sorted_ids[:-1]                                  # a new word starts after n
    if xp is np:
        starts = np.flatnonzero(np.r_[True, change])
        grad[sorted_ids[starts]] = np.add.reduceat(rows, starts, axis=0)
    else:
        ends = xp.flatnonzero(xp.concatenate([change, xp.ones(1, dtype=bool)]))   # each word's last row
        grad[sorted_ids[ends]] = segment_sums(xp, rows, ends).astype(grad.dtype)
    if padding_idx is not None:
        grad[padding_idx] = 0.0
    return grad


def segment_sums(xp, rows, ends):
    """Sums of the consecutive runs of ``rows`` (N, D) that end at the sorted indices ``ends`` (S,) -> (S, D), as
    differences of a float64 running sum (the generic form of ``np.add.reduceat``)."""
    totals = xp.cumsum(rows, axis=0, dtype=xp.float64)[ends]                    # Σ up to each run's end
    return xp.concatenate([totals[:1], totals[1:] - totals[:-1]])


def stacked(xp, arrays):
    """xp.stack(arrays) along a new first axis; one array as a view (a one-step call pays no copy)."""
    return arrays[0][None] if len(arrays) == 1 else xp.stack(arrays)


class Layer:
    """Base class: the backend, the compute dtype, named parameters and their gradients."""

    def __init__(self, backend=None, dtype="float32"):
        self.backend = resolve_backend(backend)
        self.xp = self.backend.xp
        self.dtype = np.dtype(dtype)
        self.params, self.grads = {}, {}
        self.training = True

    def add_param(self, name, host_array):
        """Register a trainable array (copied to the backend in the layer's dtype) and its zero gradient."""
        self.params[name] = self.xp.asarray(np.asarray(host_array, dtype=self.dtype))
        self.grads[name] = self.xp.zeros_like(self.params[name])


class OneHot(Layer):
    """The lecture's word encoding: ids (T, B) -> X (T, B, V) with a single 1 at the word's index (padding -> 0)."""

    def __init__(self, vocab_size, padding_idx=0, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        self.vocab_size, self.padding_idx = vocab_size, padding_idx
        table = np.eye(vocab_size)
        if padding_idx is not None:
            table[padding_idx] = 0.0
        self.table = self.xp.asarray(table.astype(self.dtype))     # (V, V)

    def forward(self, ids):
        """ids (T, B) int -> X (T, B, V)."""
        return self.xp.take(self.table, self.xp.asarray(ids), axis=0)

    def backward(self, d_x):
        """Word ids are discrete: nothing flows back."""
        return None


class Embedding(Layer):
    """Trainable word vectors: ids (T, B) -> X (T, B, D) = weight[ids]; the ``padding_idx`` row stays zero."""

    def __init__(self, vocab_size, embed_dim, padding_idx=0, rng=None, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.vocab_size, self.embed_dim, self.padding_idx = vocab_size, embed_dim, padding_idx
        weight = rng.normal(0.0, 0.1, size=(vocab_size, embed_dim))  # (V, D)
        if padding_idx is not None:
            weight[padding_idx] = 0.0
        self.add_param("weight", weight)

    def forward(self, ids):
        """ids (T, B) int -> X (T, B, D)."""
        self.ids = self.xp.asarray(ids)
        return self.xp.take(self.params["weight"], self.ids, axis=0)             # a row gather: 3x fancy indexing

    def backward(self, d_x):
        """dL/dweight[v] = Σ over positions holding word v of dL/dX_t; ids get no gradient."""
        ids = self.xp.ascontiguousarray(self.ids.ravel())                          # (N,)
        d_rows = self.xp.ascontiguousarray(d_x.reshape(-1, self.embed_dim))         # (N, D)
        backward = kernel(self.backend, "embedding_backward") or embedding_gradient
        self.grads["weight"] = backward(ids, d_rows, self.vocab_size, self.padding_idx)
        return None

    def load_vectors(self, path, vocabulary):
        """Copy pretrained vectors (GloVe or word2vec text format) into the rows of words in ``vocabulary``.

        Returns how many vocabulary words were found. Lines are ``word v1 v2 ... vD``; a word2vec header line
        ``count dim`` is skipped. Words missing from the file keep their initial vectors.
        """
        weight = to_host(self.params["weight"]).copy()
        found = 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                fields = line.rstrip("\n").rstrip().split(" ")
                if number == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                    continue                                            # word2vec header
                if len(fields) != self.embed_dim + 1:
                    raise ValueError(f"{path}:{number}: expected a word and {self.embed_dim} numbers "
                                     f"(embed_dim), got {len(fields) - 1} numbers")
                index = vocabulary.index.get(fields[0])
                if index is None or index == self.padding_idx:
                    continue
                try:
                    weight[index] = [float(x) for x in fields[1:]]
                except ValueError:
                    raise ValueError(f"{path}:{number}: the vector of {fields[0]!r} is not all numbers") from None
                found += 1
        self.params["weight"] = self.xp.asarray(weight.astype(self.dtype))
        return found


class Dropout(Layer):
    """Inverted dropout: in training, zero each entry with probability ``rate`` and scale the rest by 1/(1-rate)."""

    def __init__(self, rate, rng=None, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, x):
        """x (...) -> x ⊙ mask / (1 - rate) in training, x in evaluation."""
        if not self.training or self.rate == 0.0:
            self.mask = None
            return x
        mask = (self.rng.random(x.shape) >= self.rate).astype(x.dtype)          # keep: 1, drop: 0
        mask *= x.dtype.type(1.0 / (1.0 - self.rate))                             # the values keep/(1-rate) had
        self.mask = self.xp.asarray(mask)
        return x * self.mask

    def backward(self, d_y):
        """dL/dx = dL/dy ⊙ mask."""
        return d_y if self.mask is None else d_y * self.mask


GATES = {"rnn": 1, "gru": 3, "lstm": 4}      # G: w_x (D, G·H), w_a (H, G·H), gates side by side as in PyTorch


class RNN(Layer):
    """A recurrent layer, stacked and optionally bidirectional: the lecture's simple cell or a gated one.

    cell="rnn": A_t = g(X_t·W_X + A_{t-1}·W_A + b_A); cell="gru" and "lstm" follow PyTorch's equations and gate
    orders (GRU r, z, n; LSTM i, f, g, o) with a recurrent-side bias b_R. X (T, B, D) -> A (T, B, H·dirs) with
    ``return_sequences``, else the final states (B, H·dirs). The initial state ``a0`` (an LSTM takes the pair
    (a0, c0)) and the final ``self.a_n`` (and ``self.c_n``) are (layers·dirs, B, H) as in PyTorch. The reverse
    direction reads each sequence backwards within its own length. PyTorch names: weight_ih_l{k} = w_x.T,
    weight_hh_l{k} = w_a.T, bias_ih_l{k} = b_a, bias_hh_l{k} = b_r (the simple cell has b_a only: bias_ih + bias_hh).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False, nonlinearity="tanh",
                 dropout=0.0, return_sequences=True, init="uniform", recurrent_init="uniform", rng=None,
                 backend=None, dtype="float32", cell="rnn"):
        super().__init__(backend, dtype)
        if cell not in GATES:
            raise ValueError(f"cell must be one of {', '.join(GATES)}, got {cell!r}")
        rng = rng if rng is not None else np.random.default_rng(0)
        self.input_size, self.hidden_size, self.num_layers, self.cell = input_size, hidden_size, num_layers, cell
        self.directions = 2 if bidirectional else 1
        self.nonlinearity, self.return_sequences = nonlinearity, return_sequences
        self.dropouts = [Dropout(dropout, rng, self.backend, dtype) for _ in range(num_layers - 1)]
        H, G = hidden_size, GATES[cell]
        for layer in range(num_layers):
            D = input_size if layer == 0 else H * self.directions
            for direction in range(self.directions):
                key = self.key(layer, direction)
                self.add_param(f"w_x_{key}", initialize(init, (D, G * H), H, rng))          # W_X (D, G·H)
                self.add_param(f"w_a_{key}", np.concatenate(                                  # W_A (H, G·H)
                    [initialize(recurrent_init, (H, H), H, rng) for _ in range(G)], axis=1))
                self.add_param(f"b_a_{key}", initialize("uniform", (G * H,), H, rng))       # b_A (G·H,)
                if cell != "rnn":
                    self.add_param(f"b_r_{key}", initialize("uniform", (G * H,), H, rng))   # b_R (G·H,)

    @staticmethod
    def key(layer, direction):
        """Parameter suffix of one layer and direction, PyTorch style: l0, l0_reverse, l1, ..."""
        return f"l{layer}" + ("_reverse" if direction else "")

    def forward(self, x, lengths=None, a0=None):
        """X (T, B, D), lengths (B,), a0 (layers·dirs, B, H) or None -> A (T, B, H·dirs) or (B, H·dirs)."""
        xp, H, lstm = self.xp, self.hidden_size, self.cell == "lstm"
        T, B, _ = x.shape
        self.shape = (T, B)
        self.lengths = None if lengths is None or bool((full_lengths(lengths, T, B) == T).all()) \
            else full_lengths(lengths, T, B)
        if self.directions == 2:                       # row (t, b) of the reverse direction reads row reverse[t, b]
            reverse = reverse_index(self.lengths, T, B) * B + np.arange(B)[None, :]     # (T, B) into T·B rows
            self.reverse = xp.asarray(reverse.reshape(-1))                               # (T·B,)
        for dropout in self.dropouts:
            dropout.training = self.training
        if lstm and a0 is not None and not isinstance(a0, (tuple, list)) and getattr(a0, "ndim", 0) == 4:
            a0 = (a0[0], a0[1])                                                     # final_state's stacked form
        if lstm and a0 is not None and (not isinstance(a0, (tuple, list)) or len(a0) != 2):
            raise TypeError("an LSTM's initial state is the pair (a0, c0), each (layers·dirs, B, H)")
        zeros = xp.zeros((B, H), dtype=x.dtype) if a0 is None else None
        self.saved, finals = [], []
        layer_input = x                                                             # (T, B, D)
        for layer in range(self.num_layers):
            if layer > 0:
                layer_input = self.dropouts[layer - 1].forward(layer_input)
            outputs = []
            for direction in range(self.directions):
                key, i = self.key(layer, direction), layer * self.directions + direction
                x_dir = layer_input if direction == 0 else self.reversed(layer_input)
                if lstm:
                    state0 = (zeros, zeros) if a0 is None else (a0[0][i], a0[1][i])
                else:
                    state0 = zeros if a0 is None else a0[i]
                a, state_n, saved = self.backend.forward_sequence(
                    x_dir, state0, self.params[f"w_x_{key}"], self.params[f"w_a_{key}"],
                    self.params[f"b_a_{key}"], lengths=self.lengths, nonlinearity=self.nonlinearity,
                    cell=self.cell, b_r=self.params.get(f"b_r_{key}"))
                outputs.append(a if direction == 0 else self.reversed(a))            # back to reading order
                self.saved.append(saved)
                finals.append(state_n if lstm else (state_n,))
            layer_input = outputs[0] if self.directions == 1 else xp.concatenate(outputs, axis=2)
        self.a_n = stacked(xp, [f[0] for f in finals])                             # (layers·dirs, B, H)
        self.c_n = stacked(xp, [f[1] for f in finals]) if lstm else None           # LSTM cell states C_n
        if self.return_sequences:
            return layer_input                                                     # (T, B, H·dirs)
        return xp.concatenate([f[0] for f in finals[-self.directions:]], axis=1)   # (B, H·dirs)

    def reversed(self, x):
        """x (T, B, n) with each sequence read backwards within its length (padding steps stay): one row gather."""
        T, B, n = x.shape
        return self.xp.take(x.reshape(T * B, n), self.reverse, axis=0).reshape(T, B, n)

    @property
    def final_state(self):
        """The final state as one array: A_n (layers·dirs, B, H), or for an LSTM A_n and C_n stacked (2, ...)."""
        return self.a_n if self.cell != "lstm" else self.xp.stack([self.a_n, self.c_n])

    def backward(self, d_y, d_a_n=None, d_c_n=None):
        """dL/dA (or dL/d final states), dL/d a_n (and c_n) (layers·dirs, B, H) -> dL/dX (T, B, D); sets d_a0
        (and d_c0)."""
        xp, H, dirs, lstm = self.xp, self.hidden_size, self.directions, self.cell == "lstm"
        T, B = self.shape
        d_final = [None] * (self.num_layers * dirs) if d_a_n is None else list(d_a_n)
        if self.return_sequences:
            d_output = d_y                                                         # (T, B, H·dirs)
        else:
            d_output = xp.zeros((T, B, H * dirs), dtype=d_y.dtype)
            for direction in range(dirs):
                i = (self.num_layers - 1) * dirs + direction
                d_slice = d_y[:, direction * H:(direction + 1) * H]
                d_final[i] = d_slice if d_final[i] is None else d_final[i] + d_slice
        d_a0, d_c0 = [None] * (self.num_layers * dirs), [None] * (self.num_layers * dirs)
        for layer in reversed(range(self.num_layers)):
            d_input = None
            for direction in range(dirs):
                key, i = self.key(layer, direction), layer * dirs + direction
                d_a = d_output[:, :, direction * H:(direction + 1) * H]
                if direction == 1:
                    d_a = self.reversed(d_a)
                d_state_n = d_final[i]
                if lstm and (d_state_n is not None or d_c_n is not None):
                    zeros = xp.zeros((B, H), dtype=d_a.dtype)
                    d_state_n = (zeros if d_state_n is None else d_state_n, zeros if d_c_n is None else d_c_n[i])
                d_x, d_state0, d_w_x, d_w_a, d_b_a, d_b_r = self.backend.backward_sequence(
                    self.saved[i], xp.ascontiguousarray(d_a), d_state_n)
                d_a0[i], d_c0[i] = d_state0 if lstm else (d_state0, None)
                if direction == 1:
                    d_x = self.reversed(d_x)
                self.grads[f"w_x_{key}"], self.grads[f"w_a_{key}"], self.grads[f"b_a_{key}"] = d_w_x, d_w_a, d_b_a
                if self.cell != "rnn":
                    self.grads[f"b_r_{key}"] = d_b_r
                d_input = d_x if d_input is None else d_input + d_x
            if layer > 0:
                d_input = self.dropouts[layer - 1].backward(d_input)
            d_output = d_input
        self.d_a0 = xp.stack(d_a0)                                                 # (layers·dirs, B, H)
        self.d_c0 = xp.stack(d_c0) if lstm else None
        return d_output                                                            # (T, B, D)


class GRU(RNN):
    """``RNN(..., cell="gru")``: PyTorch's nn.GRU equations (reset applied after the recurrent product)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, cell="gru", **kwargs)


class LSTM(RNN):
    """``RNN(..., cell="lstm")``: PyTorch's nn.LSTM equations; the state is the pair (A, C)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, cell="lstm", **kwargs)


class Dense(Layer):
    """The output layer's affine part, y = X·W_y + b_y on the last axis (every step at once): (..., H) -> (..., K)."""

    def __init__(self, input_size, output_size, init="glorot", rng=None, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.input_size, self.output_size = input_size, output_size
        self.add_param("w_y", initialize(init, (input_size, output_size), input_size, rng))  # W_y (H, K)
        self.add_param("b_y", np.zeros(output_size))                                          # b_y (K,)

    def matmul(self, a, b):
        """a·b of 2-D arrays: the backend's ``matmul`` kernel where it offers one (e.g. split across its threads)."""
        return (kernel(self.backend, "matmul") or self.xp.matmul)(a, b)

    def forward(self, x):
        """X (..., H) -> X·W_y + b_y (..., K): one GEMM over all leading axes (steps and rows)."""
        self.x2 = x.reshape(-1, self.input_size)                                  # (N, H), N = T·B
        y = self.matmul(self.x2, self.params["w_y"])                              # (N, K)
        y += self.params["b_y"]
        return y.reshape(*x.shape[:-1], self.output_size)

    def backward(self, d_y):
        """dL/dW_y = Σ Xᵀ·dY, dL/db_y = Σ dY, dL/dX = dY·W_yᵀ: one GEMM each."""
        d2 = d_y.reshape(-1, self.output_size)                                    # (N, K)
        self.grads["w_y"] = self.matmul(self.x2.T, d2)
        self.grads["b_y"] = d2.sum(axis=0)
        return self.matmul(d2, self.params["w_y"].T).reshape(*d_y.shape[:-1], self.input_size)


class SequencePool(Layer):
    """Pools the valid steps of a sequence: A (T, B, H), lengths -> (B, H) by ``mean`` or ``max`` over time."""

    def __init__(self, mode="max", backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        if mode not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {mode!r}")
        self.mode = mode
        self.masked = None                       # max pooling's (T, B, H) buffer, kept: a fresh one costs page faults

    def forward(self, a, lengths=None):
        """A (T, B, H) -> (B, H)."""
        xp = self.xp
        T, B, _ = a.shape
        self.shape = a.shape
        self.valid = valid_steps(xp, lengths, T, B)[:, :, None]                   # (T, B, 1)
        if self.mode == "mean":
            self.counts = self.valid.sum(axis=0).astype(a.dtype)                   # (B, 1)
            return (a * self.valid).sum(axis=0) / self.counts
        padding = xp.where(self.valid, 0.0, -xp.inf).astype(a.dtype)               # (T, B, 1): 0 or -inf
        if self.masked is None or self.masked.shape != a.shape or self.masked.dtype != a.dtype:
            self.masked = xp.empty_like(a)
        masked = xp.add(a, padding, out=self.masked)                                # (T, B, H): padding never wins
        if not self.training:
            return masked.max(axis=0)                                               # no backward: no argmax
        best = masked[0].copy()                                                     # (B, H), max so far
        self.argmax = xp.zeros(best.shape, dtype=np.int64)                          # its step (the first)
        for t in range(1, T):                                     # step by step: argmax over axis 0 copies (T, B, H)
            xp.copyto(self.argmax, t, where=masked[t] > best)
            xp.maximum(best, masked[t], out=best)
        return best

    def backward(self, d_y):
        """Mean: dL/dA_t = dY/len on valid steps; max: dY goes to the step that held the maximum."""
        xp = self.xp
        T, B, H = self.shape
        if self.mode == "mean":
            return xp.broadcast_to(d_y / self.counts, (T, B, H)) * self.valid
        d_a = xp.zeros((T, B, H), dtype=d_y.dtype)
        d_a[self.argmax, xp.arange(B)[:, None], xp.arange(H)[None, :]] = d_y
        return d_a


class Sigmoid(Layer):
    """σ(z) = 1 / (1 + e^-z), elementwise: the output activation for binary labels."""

    def forward(self, z):
        """z (...) -> σ(z)."""
        self.y = 1.0 / (1.0 + self.xp.exp(-z))
        return self.y

    def backward(self, d_y):
        """dL/dz = dL/dy ⊙ σ(1 - σ)."""
        return d_y * self.y * (1.0 - self.y)


class Softmax(Layer):
    """softmax(z)_k = e^{z_k} / Σ_j e^{z_j} over the last axis: the output activation for K classes."""

    def forward(self, z):
        """z (..., K) -> probabilities (..., K)."""
        e = self.xp.exp(z - z.max(axis=-1, keepdims=True))
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y

    def backward(self, d_y):
        """dL/dz = y ⊙ (dL/dy - Σ_k dL/dy_k y_k)."""
        return self.y * (d_y - (d_y * self.y).sum(axis=-1, keepdims=True))


class Linear(Layer):
    """The identity activation, for regression outputs."""

    def forward(self, z):
        """z -> z."""
        return z

    def backward(self, d_y):
        """dL/dz = dL/dy."""
        return d_y
