"""A tagger that reads every word twice: its feature ids (form, suffixes, shape) and its spelling through a
character-level RNN, so that words never seen in training still get a learned representation."""
from __future__ import annotations

from .layers import RNN, Dense, Dropout, Embedding, embedding_gradient
from .models import MODELS, Model


class CharTagger(Model):
    """Many-to-many tagger: word feature ids (T, B, F) and each distinct word's characters -> logits (T, B, K).

    The U distinct words of a batch are spelled once: chars (C, U) -> char Embedding -> bidirectional char RNN ->
    final states S (U, 2·H_c). Each token gathers its word's row of S by ``word_index`` (T, B) and appends it to its
    F concatenated feature embeddings; then Dropout -> bidirectional RNN -> Dropout -> Dense on every step.
    """

    def __init__(self, vocab_size, num_features, num_chars, num_tags, embed_dim=48, char_embed_dim=24,
                 char_hidden_size=64, hidden_size=128, num_layers=1, dropout=0.0, embed_dropout=0.0,
                 nonlinearity="tanh", cell="rnn", padding_idx=0, backend=None, dtype="float32", seed=0):
        config = dict(vocab_size=vocab_size, num_features=num_features, num_chars=num_chars, num_tags=num_tags,
                      embed_dim=embed_dim, char_embed_dim=char_embed_dim, char_hidden_size=char_hidden_size,
                      hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, embed_dropout=embed_dropout,
                      nonlinearity=nonlinearity, cell=cell, padding_idx=padding_idx)
        super().__init__(config, backend, dtype, seed)
        self.num_features, self.embed_dim, self.spelling_size = num_features, embed_dim, 2 * char_hidden_size
        self.embedding = self.add("embedding", Embedding(vocab_size, embed_dim, padding_idx, self.rng, **self.common()))
        self.char_embedding = self.add("char_embedding", Embedding(num_chars, char_embed_dim, padding_idx, self.rng,
                                                                   **self.common()))
        self.char_rnn = self.add("char_rnn", RNN(char_embed_dim, char_hidden_size, 1, True, nonlinearity,
                                                 return_sequences=False, rng=self.rng, cell=cell, **self.common()))
        self.embed_dropout = self.add("embed_dropout", Dropout(embed_dropout, self.rng, **self.common()))
        self.rnn = self.add("rnn", RNN(num_features * embed_dim + self.spelling_size, hidden_size, num_layers, True,
                                       nonlinearity, dropout, rng=self.rng, cell=cell, **self.common()))
        self.dropout = self.add("dropout", Dropout(dropout, self.rng, **self.common()))
        self.output = self.add("output", Dense(hidden_size * 2, num_tags, rng=self.rng, **self.common()))

    def forward(self, ids, lengths, chars, char_lengths, word_index):
        """ids (T, B, F), lengths (B,), chars (C, U), char_lengths (U,), word_index (T, B) -> logits (T, B, K)."""
        xp = self.xp
        T, B, F = ids.shape
        words = self.embedding.forward(ids).reshape(T, B, F * self.embed_dim)          # (T, B, F·D)
        spellings = self.char_rnn.forward(self.char_embedding.forward(chars), char_lengths)  # S (U, 2·H_c)
        self.word_index, self.num_words = xp.asarray(word_index), spellings.shape[0]
        x = xp.concatenate([words, spellings[self.word_index]], axis=2)                  # (T, B, F·D + 2·H_c)
        a = self.rnn.forward(self.embed_dropout.forward(x), lengths)                     # (T, B, 2·H)
        return self.output.forward(self.dropout.forward(a))                              # (T, B, K)

    def backward(self, d_logits):
        """dL/dlogits (T, B, K) -> gradients of every layer; a word's spelling gets the sum over its tokens."""
        d_x = self.embed_dropout.backward(self.rnn.backward(self.dropout.backward(self.output.backward(d_logits))))
        T, B, width = d_x.shape
        FD = width - self.spelling_size
        self.embedding.backward(d_x[:, :, :FD].reshape(T, B, self.num_features, self.embed_dim))
        d_spellings = embedding_gradient(self.word_index.ravel(), d_x[:, :, FD:].reshape(T * B, self.spelling_size),
                                         self.num_words)                                 # (U, 2·H_c)
        self.char_embedding.backward(self.char_rnn.backward(d_spellings))


MODELS[CharTagger.__name__] = CharTagger
