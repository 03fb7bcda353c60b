"""The lecture's architectures as models: a few layers wired together with explicit forward and backward.

Each model exposes ``params``/``grads`` (flat dicts named ``layer.param``), ``forward(*inputs)`` returning
logits (or predictions), ``backward(d_logits)``, ``train()``/``eval()``, and ``config`` (the constructor's
arguments, JSON-ready) so that a checkpoint can rebuild it on any backend.
"""
from __future__ import annotations

import numpy as np

from .decoding import beam_search, greedy_search, sample_sequence
from .layers import RNN, Dense, Dropout, Embedding, OneHot, SequencePool, resolve_backend, to_host


class Model:
    """Base class: named layers, their parameters and gradients, modes, and host copies of the weights."""

    def __init__(self, config, backend=None, dtype="float32", seed=0):
        self.config = dict(config)
        self.backend = resolve_backend(backend)
        self.xp = self.backend.xp
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng(seed)
        self.layers = {}

    def add(self, name, layer):
        """Register ``layer`` under ``name`` and return it."""
        self.layers[name] = layer
        return layer

    def common(self):
        """The keyword arguments every layer of this model takes."""
        return {"backend": self.backend, "dtype": self.dtype}

    @property
    def params(self):
        """Every trainable array, named ``layer.param``."""
        return {f"{ln}.{pn}": p for ln, layer in self.layers.items() for pn, p in layer.params.items()}

    @property
    def grads(self):
        """Every gradient from the last backward pass, named as ``params``."""
        return {f"{ln}.{pn}": g for ln, layer in self.layers.items() for pn, g in layer.grads.items()}

    def train(self):
        """Training mode: dropout active."""
        for layer in self.layers.values():
            layer.training = True

    def eval(self):
        """Evaluation mode: dropout off."""
        for layer in self.layers.values():
            layer.training = False

    def state_dict(self):
        """Host NumPy copies of every parameter."""
        return {name: to_host(p).copy() for name, p in self.params.items()}

    def load_state_dict(self, state):
        """Copy host arrays into the parameters (names and shapes must match)."""
        params = self.params
        missing, unexpected = set(params) - set(state), set(state) - set(params)
        if missing or unexpected:
            raise ValueError(f"weights do not fit the model: missing {sorted(missing)}, "
                             f"unexpected {sorted(unexpected)}")
        for name, value in state.items():
            layer_name, param_name = name.split(".", 1)
            layer = self.layers[layer_name]
            if tuple(value.shape) != tuple(layer.params[param_name].shape):
                raise ValueError(f"{name}: checkpoint shape {tuple(value.shape)}, model shape "
                                 f"{tuple(layer.params[param_name].shape)}")
            layer.params[param_name] = self.xp.asarray(np.asarray(value, dtype=self.dtype))

    def num_params(self):
        """The number of trainable scalars."""
        return sum(int(np.prod(p.shape)) for p in self.params.values())


def word_encoder(model, vocab_size, embed_dim, padding_idx):
    """An Embedding layer, or the lecture's OneHot encoding when ``embed_dim`` is 0; returns (layer, its width)."""
    if embed_dim:
        return model.add("embedding", Embedding(vocab_size, embed_dim, padding_idx, model.rng,
                                                **model.common())), embed_dim
    return model.add("one_hot", OneHot(vocab_size, padding_idx, **model.common())), vocab_size


class SequenceClassifier(Model):
    """Many-to-one: words -> Embedding -> RNN -> (last state | mean | max over steps) -> Dropout -> Dense -> (B, K).

    With ``num_classes=2`` there is one logit per sentence (binary cross-entropy); otherwise K logits.
    """

    def __init__(self, vocab_size, num_classes=2, embed_dim=64, hidden_size=64, num_layers=1, bidirectional=False,
                 pooling="last", dropout=0.0, embed_dropout=0.0, nonlinearity="tanh", cell="rnn", padding_idx=0,
                 backend=None, dtype="float32", seed=0):
        config = dict(vocab_size=vocab_size, num_classes=num_classes, embed_dim=embed_dim, hidden_size=hidden_size,
                      num_layers=num_layers, bidirectional=bidirectional, pooling=pooling, dropout=dropout,
                      embed_dropout=embed_dropout, nonlinearity=nonlinearity, cell=cell, padding_idx=padding_idx)
        super().__init__(config, backend, dtype, seed)
        self.pooling = pooling
        self.encoder, width = word_encoder(self, vocab_size, embed_dim, padding_idx)
        self.embed_dropout = self.add("embed_dropout", Dropout(embed_dropout, self.rng, **self.common()))
        self.rnn = self.add("rnn", RNN(width, hidden_size, num_layers, bidirectional, nonlinearity, dropout,
                                       return_sequences=pooling != "last", rng=self.rng, cell=cell, **self.common()))
        self.pool = self.add("pool", SequencePool(pooling, **self.common())) if pooling != "last" else None
        self.dropout = self.add("dropout", Dropout(dropout, self.rng, **self.common()))
        outputs = 1 if num_classes == 2 else num_classes
        self.output = self.add("output", Dense(hidden_size * self.rnn.directions, outputs, rng=self.rng,
                                               **self.common()))

    def forward(self, ids, lengths=None):
        """ids (T, B), lengths (B,) -> logits (B,) for two classes, else (B, K)."""
        x = self.embed_dropout.forward(self.encoder.forward(ids))                 # (T, B, D)
        a = self.rnn.forward(x, lengths)                                          # (T, B, H·dirs) or (B, H·dirs)
        features = a if self.pool is None else self.pool.forward(a, lengths)      # (B, H·dirs)
        logits = self.output.forward(self.dropout.forward(features))              # (B, K)
        return logits[:, 0] if self.output.output_size == 1 else logits

    def backward(self, d_logits):
        """dL/dlogits -> gradients of every layer."""
        d_logits = d_logits[:, None] if self.output.output_size == 1 else d_logits
        d_features = self.dropout.backward(self.output.backward(d_logits))
        d_a = d_features if self.pool is None else self.pool.backward(d_features)
        self.encoder.backward(self.embed_dropout.backward(self.rnn.backward(d_a)))


class SequenceTagger(Model):
    """Many-to-many of the same length: words -> Embedding -> RNN -> Dense on every step -> logits (T, B, K)."""

    def __init__(self, vocab_size, num_tags, embed_dim=64, hidden_size=64, num_layers=1, bidirectional=True,
                 dropout=0.0, nonlinearity="tanh", cell="rnn", padding_idx=0, backend=None, dtype="float32", seed=0):
        config = dict(vocab_size=vocab_size, num_tags=num_tags, embed_dim=embed_dim, hidden_size=hidden_size,
                      num_layers=num_layers, bidirectional=bidirectional, dropout=dropout, nonlinearity=nonlinearity,
                      cell=cell, padding_idx=padding_idx)
        super().__init__(config, backend, dtype, seed)
        self.encoder, width = word_encoder(self, vocab_size, embed_dim, padding_idx)
        self.rnn = self.add("rnn", RNN(width, hidden_size, num_layers, bidirectional, nonlinearity, dropout,
                                       rng=self.rng, cell=cell, **self.common()))
        self.output = self.add("output", Dense(hidden_size * self.rnn.directions, num_tags, rng=self.rng,
                                               **self.common()))

    def forward(self, ids, lengths=None):
        """ids (T, B), lengths (B,) -> logits (T, B, K); padding steps give the bias only and are masked in the loss."""
        return self.output.forward(self.rnn.forward(self.encoder.forward(ids), lengths))

    def backward(self, d_logits):
        """dL/dlogits (T, B, K) -> gradients of every layer."""
        self.encoder.backward(self.rnn.backward(self.output.backward(d_logits)))


class FeatureTagger(Model):
    """Many-to-many tagger over F ids per word (the word and unknown-word features such as suffixes and shape).

    ids (T, B, F) -> one Embedding, the F vectors concatenated (T, B, F·D) -> Dropout -> RNN -> Dropout ->
    Dense on every step -> logits (T, B, K).
    """

    def __init__(self, vocab_size, num_features, num_tags, embed_dim=32, hidden_size=128, num_layers=1,
                 bidirectional=True, dropout=0.0, embed_dropout=0.0, nonlinearity="tanh", cell="rnn", padding_idx=0,
                 backend=None, dtype="float32", seed=0):
        config = dict(vocab_size=vocab_size, num_features=num_features, num_tags=num_tags, embed_dim=embed_dim,
                      hidden_size=hidden_size, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
                      embed_dropout=embed_dropout, nonlinearity=nonlinearity, cell=cell, padding_idx=padding_idx)
        super().__init__(config, backend, dtype, seed)
        self.num_features, self.embed_dim = num_features, embed_dim
        self.embedding = self.add("embedding", Embedding(vocab_size, embed_dim, padding_idx, self.rng, **self.common()))
        self.embed_dropout = self.add("embed_dropout", Dropout(embed_dropout, self.rng, **self.common()))
        self.rnn = self.add("rnn", RNN(num_features * embed_dim, hidden_size, num_layers, bidirectional, nonlinearity,
                                       dropout, rng=self.rng, cell=cell, **self.common()))
        self.dropout = self.add("dropout", Dropout(dropout, self.rng, **self.common()))
        self.output = self.add("output", Dense(hidden_size * self.rnn.directions, num_tags, rng=self.rng,
                                               **self.common()))

    def forward(self, ids, lengths=None):
        """ids (T, B, F), lengths (B,) -> logits (T, B, K)."""
        T, B, F = ids.shape
        x = self.embedding.forward(ids).reshape(T, B, F * self.embed_dim)         # (T, B, F·D)
        a = self.rnn.forward(self.embed_dropout.forward(x), lengths)              # (T, B, H·dirs)
        return self.output.forward(self.dropout.forward(a))                       # (T, B, K)

    def backward(self, d_logits):
        """dL/dlogits (T, B, K) -> gradients of every layer."""
        d_x = self.rnn.backward(self.dropout.backward(self.output.backward(d_logits)))   # (T, B, F·D)
        T, B, _ = d_x.shape
        self.embedding.backward(self.embed_dropout.backward(d_x).reshape(T, B, self.num_features, self.embed_dim))


class LanguageModel(Model):
    """One-to-many / next-token prediction: ids -> Embedding -> RNN -> Dropout -> Dense -> logits (T, B, V).

    With ``stateful=True`` the final state of one batch is the initial state of the next (truncated BPTT over a
    long stream); ``reset_state()`` starts afresh.
    """

    def __init__(self, vocab_size, embed_dim=64, hidden_size=128, num_layers=1, dropout=0.0, nonlinearity="tanh",
                 cell="rnn", stateful=False, padding_idx=None, backend=None, dtype="float32", seed=0):
        config = dict(vocab_size=vocab_size, embed_dim=embed_dim, hidden_size=hidden_size, num_layers=num_layers,
                      dropout=dropout, nonlinearity=nonlinearity, cell=cell, stateful=stateful, padding_idx=padding_idx)
        super().__init__(config, backend, dtype, seed)
        self.stateful = stateful
        self.encoder, width = word_encoder(self, vocab_size, embed_dim, padding_idx)
        self.rnn = self.add("rnn", RNN(width, hidden_size, num_layers, False, nonlinearity, dropout,
                                       rng=self.rng, cell=cell, **self.common()))
        self.output_dropout = self.add("output_dropout", Dropout(dropout, self.rng, **self.common()))
        self.output = self.add("output", Dense(hidden_size, vocab_size, rng=self.rng, **self.common()))
        self.state = None

    def reset_state(self):
        """Forget the carried state."""
        self.state = None

    def forward(self, ids, lengths=None, a0=None):
        """ids (T, B) -> logits (T, B, V); a0 (layers, B, H) (an LSTM's stacked with C: (2, layers, B, H)) or the
        carried state when stateful."""
        a0 = self.state if a0 is None and self.stateful else a0
        if a0 is not None and a0.shape[-2] != ids.shape[1]:
            a0 = None                                                             # a batch of another size
        a = self.rnn.forward(self.encoder.forward(ids), lengths, a0)                # (T, B, H)
        logits = self.output.forward(self.output_dropout.forward(a))
        if self.stateful:
            self.state = self.rnn.final_state                                     # carried, not backpropagated into
        return logits

    def backward(self, d_logits):
        """dL/dlogits (T, B, V) -> gradients (truncated at the start of the batch)."""
        self.encoder.backward(self.rnn.backward(self.output_dropout.backward(self.output.backward(d_logits))))

    def step(self, tokens, state=None):
        """tokens (B,), state (layers, B, H) on the host or None -> logits (B, V) and the new state, on the host."""
        a0 = None if state is None else self.xp.asarray(state, dtype=self.dtype)
        a = self.rnn.forward(self.encoder.forward(np.asarray(tokens, dtype=np.int64)[None]), None, a0)  # (1, B, H)
        return to_host(self.output.forward(a)[0]), to_host(self.rnn.final_state)

    def generate(self, prime_ids, length, temperature=1.0, top_k=None, rng=None, end_id=None, banned=()):
        """``length`` ids sampled after ``prime_ids`` (a non-empty list): greedy at temperature 0, else top-k
        sampling; ids in ``banned`` (e.g. padding and unknown) are never produced."""
        self.eval()
        state = None
        if len(prime_ids) > 1:                                                    # read the prime in one pass
            self.rnn.forward(self.encoder.forward(np.asarray(prime_ids[:-1], dtype=np.int64)[:, None]))
            state = to_host(self.rnn.final_state)                                 # (layers, 1, H) or (2, ...)
        return sample_sequence(self.step, state, prime_ids[-1], length, temperature, top_k, rng, end_id, banned)


class EncoderDecoder(Model):
    """Many-to-many of different lengths: an encoder RNN's final state A_n is the decoder RNN's A_0 (teacher forcing).

    With ``feed_context`` the summary A_n is also appended to the decoder's input at every step (Cho et al. 2014),
    so the decoder need not carry it in its state alone. ``dropout`` applies to both embeddings and to the
    decoder's states before the output layer.
    """

    def __init__(self, source_vocab_size, target_vocab_size, embed_dim=64, hidden_size=128, nonlinearity="tanh",
                 cell="rnn", padding_idx=0, dropout=0.0, feed_context=False, backend=None, dtype="float32", seed=0):
        config = dict(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size, embed_dim=embed_dim,
                      hidden_size=hidden_size, nonlinearity=nonlinearity, cell=cell, padding_idx=padding_idx,
                      dropout=dropout, feed_context=feed_context)
        super().__init__(config, backend, dtype, seed)
        common = self.common()
        self.embed_dim, self.feed_context = embed_dim, feed_context
        self.source_embedding = self.add("source_embedding", Embedding(source_vocab_size, embed_dim, padding_idx,
                                                                       self.rng, **common))
        self.target_embedding = self.add("target_embedding", Embedding(target_vocab_size, embed_dim, padding_idx,
                                                                       self.rng, **common))
        self.encoder = self.add("encoder", RNN(embed_dim, hidden_size, nonlinearity=nonlinearity,
                                               return_sequences=False, rng=self.rng, cell=cell, **common))
        decoder_input = embed_dim + hidden_size if feed_context else embed_dim
        self.decoder = self.add("decoder", RNN(decoder_input, hidden_size, nonlinearity=nonlinearity, rng=self.rng,
                                               cell=cell, **common))
        self.output = self.add("output", Dense(hidden_size, target_vocab_size, rng=self.rng, **common))
        self.source_dropout = self.add("source_dropout", Dropout(dropout, self.rng, **common))
        self.target_dropout = self.add("target_dropout", Dropout(dropout, self.rng, **common))
        self.output_dropout = self.add("output_dropout", Dropout(dropout, self.rng, **common))

    def decoder_input(self, x_target, summary):
        """Target embeddings (T, B, D) -> the decoder's input: (T, B, D), or (T, B, D+H) with the summary (B, H)."""
        if not self.feed_context:
            return x_target
        T, B, _ = x_target.shape
        return self.xp.concatenate([x_target, self.xp.broadcast_to(summary[None], (T, B, summary.shape[-1]))], axis=2)

    def forward(self, source_ids, source_lengths, target_in_ids, target_lengths=None):
        """source (S, B), target inputs (T, B) starting with a start token -> logits (T, B, V_target)."""
        x_source = self.source_dropout.forward(self.source_embedding.forward(source_ids))             # (S, B, D)
        summary = self.encoder.forward(x_source, source_lengths)                                      # A_n (B, H)
        x_target = self.target_dropout.forward(self.target_embedding.forward(target_in_ids))         # (T, B, D)
        a = self.decoder.forward(self.decoder_input(x_target, summary), target_lengths,                # (T, B, H)
                                 self.encoder.final_state)                                           # A_0 (, C_0)
        return self.output.forward(self.output_dropout.forward(a))

    def backward(self, d_logits):
        """dL/dlogits (T, B, V) -> gradients of both RNNs through the handed-over state (and the fed context)."""
        d_a = self.output_dropout.backward(self.output.backward(d_logits))
        d_x = self.decoder.backward(d_a)                                         # (T, B, D) or (T, B, D+H)
        d_summary = self.decoder.d_a0[0]                                         # (B, H)
        if self.feed_context:
            d_summary = d_summary + d_x[:, :, self.embed_dim:].sum(axis=0)
            d_x = d_x[:, :, :self.embed_dim]
        self.target_embedding.backward(self.target_dropout.backward(d_x))
        d_x_source = self.encoder.backward(d_summary, None, self.decoder.d_c0)   # an LSTM hands over C_n too
        self.source_embedding.backward(self.source_dropout.backward(d_x_source))

    def encode(self, source_ids, source_lengths=None):
        """source (S, B), lengths (B,) -> the decoding state on the host, rows (k, B, H): A_0 = A_n (and C_0 = C_n
        for an LSTM), then A_n again as the fed context with ``feed_context``."""
        summary = to_host(self.encoder.forward(self.source_embedding.forward(source_ids), source_lengths))   # (B, H)
        rows = [summary] + ([to_host(self.encoder.c_n[0])] if self.encoder.cell == "lstm" else [])
        return np.stack(rows + [summary] if self.feed_context else rows)

    def step(self, tokens, state):
        """tokens (B,), the state from ``encode`` or the last step, on the host -> logits (B, V_target), new state."""
        state = self.xp.asarray(state, dtype=self.dtype)
        parts = 2 if self.decoder.cell == "lstm" else 1                                              # A (, C) rows
        a0 = (state[:1], state[1:2]) if parts == 2 else state[:1]
        x_target = self.target_embedding.forward(np.asarray(tokens, dtype=np.int64)[None])          # (1, B, D)
        a = self.decoder.forward(self.decoder_input(x_target, state[-1]), None, a0)                  # (1, B, H)
        final = self.decoder.final_state.reshape(parts, *self.decoder.a_n.shape[1:])                # (parts, B, H)
        new_state = self.xp.concatenate([final, state[parts:]]) if self.feed_context else final
        return to_host(self.output.forward(a)[0]), to_host(new_state)

    def translate(self, source_ids, source_lengths, start_id, end_id, max_steps, beam_size=1, alpha=1.0):
        """Decode each source greedily (``beam_size`` 1) or by beam search -> (id lists, normalised log P)."""
        self.eval()
        state = self.encode(source_ids, source_lengths)
        if beam_size == 1:
            return greedy_search(self.step, state, start_id, end_id, max_steps, alpha)
        return beam_search(self.step, state, start_id, end_id, max_steps, beam_size, alpha)


class Forecaster(Model):
    """Time series: a window of past values X (T, B, F) -> RNN -> last state -> Dense -> the next ``horizon`` values."""

    def __init__(self, input_size=1, hidden_size=32, num_layers=1, horizon=1, dropout=0.0, nonlinearity="tanh",
                 cell="rnn", backend=None, dtype="float32", seed=0):
        config = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, horizon=horizon,
                      dropout=dropout, nonlinearity=nonlinearity, cell=cell)
        super().__init__(config, backend, dtype, seed)
        self.rnn = self.add("rnn", RNN(input_size, hidden_size, num_layers, False, nonlinearity, dropout,
                                       return_sequences=False, rng=self.rng, cell=cell, **self.common()))
        self.output = self.add("output", Dense(hidden_size, horizon, rng=self.rng, **self.common()))

    def forward(self, x, lengths=None):
        """X (T, B, F) -> predictions (B, horizon)."""
        return self.output.forward(self.rnn.forward(self.xp.asarray(x, dtype=self.dtype), lengths))

    def backward(self, d_predictions):
        """dL/dpredictions (B, horizon) -> gradients."""
        self.rnn.backward(self.output.backward(d_predictions))


MODELS = {cls.__name__: cls for cls in (SequenceClassifier, SequenceTagger, FeatureTagger, LanguageModel,
                                        EncoderDecoder,
                                           Forecaster)}


def build_model(class_name, config, backend=None, dtype="float32", seed=0):
    """Rebuild a model from its class name and ``config`` (as saved in a checkpoint)."""
    if class_name not in MODELS:
        raise ValueError(f"unknown model class {class_name!r}; known: {', '.join(MODELS)}")
    return MODELS[class_name](**config, backend=backend, dtype=dtype, seed=seed)

# noqa: E402,F401 below: these modules build on Model and register their classes (AttentionTranslator, CharTagger)
from . import attention, char_tagger  # noqa: E402,F401
