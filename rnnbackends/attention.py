"""Attention over an encoder's states (Luong et al. 2015, the "general" score, scaled by 1/√H) and the translator
built on it.

Written once against ``backend.xp`` with explicit forward and backward, like every layer. The encoder's states
(the memory M, (S, B, K)) are read at every decoder step t through weights α_t = softmax_s(A_t·W_α·M_s / √H) over
the valid source steps s < length (padding gets weight 0); the context C_t = Σ_s α_ts M_s joins the decoder state
in the attentional state Ã_t = tanh([C_t; A_t]·W_c + b_c), from which the output layer predicts the next word.
The 1/√H keeps the scores of order one (as in scaled dot-product attention): unscaled, they start large, the
softmax saturates on one source step early in training and the other steps get no gradient to recover.
"""
from __future__ import annotations

import numpy as np

from .arrays import valid_steps
from .decoding import beam_search, greedy_search
from .initializers import initialize
from .layers import RNN, Dense, Dropout, Embedding, Layer, to_host
from .models import MODELS, Model


class LuongAttention(Layer):
    """Scaled multiplicative attention: decoder states A (T, B, H) over memory M (S, B, K) -> attentional states Ã.

    ``weights`` (T, B, S) keeps the last forward's α for plots.
    """

    def __init__(self, query_size, memory_size, rng=None, backend=None, dtype="float32"):
        super().__init__(backend, dtype)
        rng = rng if rng is not None else np.random.default_rng(0)
        self.query_size, self.memory_size = query_size, memory_size
        H, K = query_size, memory_size
        self.scale = 1.0 / np.sqrt(H)                                                   # 1/√H
        self.add_param("w_alpha", initialize("glorot", (H, K), K, rng))                 # W_α (H, K)
        self.add_param("w_c", initialize("glorot", (K + H, H), K + H, rng))              # W_c (K+H, H)
        self.add_param("b_c", np.zeros(H))                                               # b_c (H,)

    def keys(self, memory):
        """The keys M·W_αᵀ/√H (S, B, H), shared by every decoder step over the same memory."""
        S, B, K = memory.shape
        keys = memory.reshape(S * B, K) @ self.params["w_alpha"].T
        keys *= keys.dtype.type(self.scale)
        return keys.reshape(S, B, self.query_size)

    def forward(self, a, memory, lengths=None, keys=None):
        """A (T, B, H), M (S, B, K), source lengths (B,) -> Ã (T, B, H); ``keys`` from ``keys(memory)`` if at hand.

        Works batch-major on contiguous copies, (B, T, ·) and (B, S, ·), so every product is a BLAS GEMM.
        """
        xp, H, K = self.xp, self.query_size, self.memory_size
        S, B, _ = memory.shape
        T = a.shape[0]
        keys = self.keys(memory) if keys is None else keys
        self.q = xp.ascontiguousarray(a.transpose(1, 0, 2))                        # (B, T, H)
        self.m = xp.ascontiguousarray(memory.transpose(1, 0, 2))                   # (B, S, K)
        self.k = xp.ascontiguousarray(keys.transpose(1, 0, 2))                     # (B, S, H)
        valid = valid_steps(xp, lengths, S, B).T[:, None, :]                        # (B, 1, S)
        scores = xp.where(valid, self.q @ self.k.transpose(0, 2, 1), -xp.inf)       # (B, T, S)
        e = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        self.alpha = e / e.sum(axis=-1, keepdims=True)                              # α (B, T, S)
        self.joined = xp.concatenate([self.alpha @ self.m, self.q], axis=2).reshape(B * T, K + H)  # [C_t; A_t]
        self.out = xp.tanh(self.joined @ self.params["w_c"] + self.params["b_c"])   # Ã (B·T, H)
        return self.out.reshape(B, T, H).transpose(1, 0, 2)                         # (T, B, H)

    @property
    def weights(self):
        """α of the last forward: (T, B, S), zero on padding steps of the source."""
        return self.alpha.transpose(1, 0, 2)

    def backward(self, d_out):
        """dL/dÃ (T, B, H) -> (dL/dA (T, B, H), dL/dM (S, B, K)); sets the gradients of W_α, W_c, b_c."""
        xp, K, H = self.xp, self.memory_size, self.query_size
        B, T, _ = self.q.shape
        d_z = xp.ascontiguousarray(d_out.transpose(1, 0, 2)).reshape(B * T, H) * (1.0 - self.out * self.out)
        self.grads["w_c"] = self.joined.T @ d_z                                      # (K+H, H)
        self.grads["b_c"] = d_z.sum(axis=0)
        d_joined = (d_z @ self.params["w_c"].T).reshape(B, T, K + H)
        d_context, d_q = xp.ascontiguousarray(d_joined[:, :, :K]), d_joined[:, :, K:]
        d_alpha = d_context @ self.m.transpose(0, 2, 1)                              # (B, T, S)
        d_m = self.alpha.transpose(0, 2, 1) @ d_context                              # (B, S, K)
        d_scores = self.alpha * (d_alpha - (d_alpha * self.alpha).sum(axis=-1, keepdims=True))   # 0 on padding
        d_q = d_q + d_scores @ self.k                                                # (B, T, H)
        d_k = (d_scores.transpose(0, 2, 1) @ self.q) * self.q.dtype.type(self.scale)  # dL/d(M·W_αᵀ) (B, S, H)
        self.grads["w_alpha"] = d_k.reshape(-1, H).T @ self.m.reshape(-1, K)         # (H, K)
        d_m = d_m + (d_k.reshape(-1, H) @ self.params["w_alpha"]).reshape(d_m.shape)   # (B, S, K)
        return d_q.transpose(1, 0, 2), d_m.transpose(1, 0, 2)


class AttentionTranslator(Model):
    """Encoder-decoder with attention: a bidirectional encoder's states are the memory every decoder step reads.

    source ids (S, B) -> Embedding -> bidirectional RNN (hidden_size/2 each way) -> M (S, B, K = hidden_size);
    the decoder's A_0 = tanh([A_n forward; A_n backward]·W_bridge + b) (an LSTM's C_0 = 0); target ids <s> y (T, B)
    -> Embedding -> RNN -> A (T, B, H) -> attention over M -> Ã (T, B, H) -> Dropout -> Dense -> logits (T, B, V).
    """

    def __init__(self, source_vocab_size, target_vocab_size, embed_dim=128, hidden_size=256, cell="gru",
                 nonlinearity="tanh", dropout=0.0, padding_idx=0, backend=None, dtype="float32", seed=0):
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (half of it each way in the encoder), got {hidden_size}")
        config = dict(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size, embed_dim=embed_dim,
                      hidden_size=hidden_size, cell=cell, nonlinearity=nonlinearity, dropout=dropout,
                      padding_idx=padding_idx)
        super().__init__(config, backend, dtype, seed)
        common, H = self.common(), hidden_size
        self.source_embedding = self.add("source_embedding", Embedding(source_vocab_size, embed_dim, padding_idx,
                                                                       self.rng, **common))
        self.target_embedding = self.add("target_embedding", Embedding(target_vocab_size, embed_dim, padding_idx,
                                                                       self.rng, **common))
        self.encoder = self.add("encoder", RNN(embed_dim, H // 2, bidirectional=True, nonlinearity=nonlinearity,
                                               rng=self.rng, cell=cell, **common))
        self.bridge = self.add("bridge", Dense(H, H, rng=self.rng, **common))
        self.decoder = self.add("decoder", RNN(embed_dim, H, nonlinearity=nonlinearity, rng=self.rng, cell=cell,
                                               **common))
        self.attention = self.add("attention", LuongAttention(H, H, self.rng, **common))
        self.output = self.add("output", Dense(H, target_vocab_size, rng=self.rng, **common))
        self.source_dropout = self.add("source_dropout", Dropout(dropout, self.rng, **common))
        self.target_dropout = self.add("target_dropout", Dropout(dropout, self.rng, **common))
        self.output_dropout = self.add("output_dropout", Dropout(dropout, self.rng, **common))

    def encode_memory(self, source_ids, source_lengths):
        """source (S, B), lengths (B,) -> memory M (S, B, K) and the decoder's initial state A_0 (1, B, H)."""
        x_source = self.source_dropout.forward(self.source_embedding.forward(source_ids))   # (S, B, D)
        memory = self.encoder.forward(x_source, source_lengths)                             # (S, B, K)
        a_n = self.encoder.a_n                                                              # (2, B, K/2)
        self.a0 = self.xp.tanh(self.bridge.forward(self.xp.concatenate([a_n[0], a_n[1]], axis=1)))[None]
        return memory, self.a0                                                              # A_0 (1, B, H)

    def initial_state(self, a0):
        """The decoder RNN's initial state: A_0, or for an LSTM the pair (A_0, C_0 = 0)."""
        return (a0, self.xp.zeros_like(a0)) if self.decoder.cell == "lstm" else a0

    def forward(self, source_ids, source_lengths, target_in_ids, target_lengths=None, rows=None):
        """source (S, B), lengths (B,), target inputs (T, B) starting with a start token -> logits (T, B, V).

        With ``rows``, indices (N,) into the T·B target positions (step-major, e.g. ``np.flatnonzero(mask)``), the
        output layer runs on those rows alone -> logits (N, V): padded positions cost no output GEMM nor softmax.
        """
        memory, a0 = self.encode_memory(source_ids, source_lengths)
        x_target = self.target_dropout.forward(self.target_embedding.forward(target_in_ids))   # (T, B, D)
        a = self.decoder.forward(x_target, target_lengths, self.initial_state(a0))               # (T, B, H)
        attended = self.output_dropout.forward(self.attention.forward(a, memory, source_lengths))   # Ã (T, B, H)
        self.rows = None if rows is None else self.xp.asarray(rows)                             # (N,) on the device
        self.attended_shape = attended.shape
        if rows is not None:
            attended = attended.reshape(-1, attended.shape[2])[self.rows]                       # Ã (N, H)
        return self.output.forward(attended)

    def backward(self, d_logits):
        """dL/dlogits (T, B, V), or (N, V) after ``forward(..., rows)`` -> gradients of every layer, into the
        encoder through the memory and A_0."""
        d_attended = self.output.backward(d_logits)                               # (T, B, H) or (N, H)
        if self.rows is not None:
            T, B, H = self.attended_shape
            scattered = self.xp.zeros((T * B, H), dtype=d_attended.dtype)
            scattered[self.rows] = d_attended                                     # padded positions: 0
            d_attended = scattered.reshape(T, B, H)
        d_attended = self.output_dropout.backward(d_attended)
        d_a, d_memory = self.attention.backward(d_attended)                       # (T, B, H), (S, B, K)
        self.target_embedding.backward(self.target_dropout.backward(self.decoder.backward(d_a)))
        d_bridge = self.bridge.backward(self.decoder.d_a0[0] * (1.0 - self.a0[0] * self.a0[0]))   # (B, K)
        half = d_bridge.shape[1] // 2
        d_x_source = self.encoder.backward(d_memory, self.xp.stack([d_bridge[:, :half], d_bridge[:, half:]]))
        self.source_embedding.backward(self.source_dropout.backward(d_x_source))

    def encode(self, source_ids, source_lengths=None):
        """Start decoding a batch of N sources: keeps their memory; -> the state (decoder state, source rows)."""
        self.eval()
        source_ids = np.asarray(source_ids)
        memory, a0 = self.encode_memory(source_ids, source_lengths)
        self.memory, self.memory_keys = memory, self.attention.keys(memory)         # (S, N, K), (S, N, H)
        self.memory_lengths = np.full(source_ids.shape[1], source_ids.shape[0]) if source_lengths is None \
            else np.asarray(source_lengths)
        a0 = to_host(a0)                                                            # (1, N, H)
        state = np.concatenate([a0, np.zeros_like(a0)]) if self.decoder.cell == "lstm" else a0
        return state, np.arange(source_ids.shape[1])[None]                         # (parts, N, H), (1, N)

    def step(self, tokens, state):
        """tokens (B,), (decoder state (parts, B, H), source rows (1, B)) -> logits (B, V), the new state."""
        decoder_state, rows = state
        parts = len(decoder_state)
        a_prev = self.xp.asarray(decoder_state, dtype=self.dtype)
        x_target = self.target_embedding.forward(np.asarray(tokens, dtype=np.int64)[None])      # (1, B, D)
        a = self.decoder.forward(x_target, None, (a_prev[:1], a_prev[1:]) if parts == 2 else a_prev)  # (1, B, H)
        source = self.xp.asarray(rows[0])
        attended = self.attention.forward(a, self.memory[:, source], self.memory_lengths[rows[0]],
                                          self.memory_keys[:, source])                           # (1, B, H)
        final = self.decoder.final_state.reshape(parts, *a.shape[1:])                            # (parts, B, H)
        return to_host(self.output.forward(attended)[0]), (to_host(final), rows)

    def translate(self, source_ids, source_lengths, start_id, end_id, max_steps, beam_size=1, alpha=1.0):
        """Decode each source greedily (``beam_size`` 1) or by beam search -> (id lists, normalised log P)."""
        state = self.encode(source_ids, source_lengths)
        if beam_size == 1:
            return greedy_search(self.step, state, start_id, end_id, max_steps, alpha)
        return beam_search(self.step, state, start_id, end_id, max_steps, beam_size, alpha)

    def attention_weights(self, source_ids, target_in_ids):
        """α (T, S) of one sentence pair under teacher forcing: source (S,), target inputs <s> y (T,)."""
        self.eval()
        self.forward(np.asarray(source_ids)[:, None], None, np.asarray(target_in_ids)[:, None])
        return to_host(self.attention.weights[:, 0])


MODELS[AttentionTranslator.__name__] = AttentionTranslator
