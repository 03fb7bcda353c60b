"""Text to ids and ids to batches: a word/character tokeniser, a vocabulary, padded time-major batches."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

PAD, UNK = "<pad>", "<unk>"
WORD = re.compile(r"[\w']+|[^\w\s]")


class Tokenizer:
    """Splits text into lower-cased words and punctuation marks (``level="word"``) or characters (``"char"``)."""

    def __init__(self, level="word", lower=True):
        if level not in ("word", "char"):
            raise ValueError(f"tokeniser level must be 'word' or 'char', got {level!r}")
        self.level, self.lower = level, lower

    def __call__(self, text):
        """The list of tokens of one text."""
        text = text.lower() if self.lower else text
        return WORD.findall(text) if self.level == "word" else list(text)

    def config(self):
        """What rebuilds this tokeniser."""
        return {"level": self.level, "lower": self.lower}


class Vocabulary:
    """Token <-> id, with ``<pad>`` = 0 and ``<unk>`` = 1 for tokens never seen in training."""

    def __init__(self, tokens):
        self.tokens = list(tokens)
        if self.tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {self.tokens[:2]}")
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.pad_id, self.unk_id = 0, 1

    @classmethod
    def build(cls, token_lists, min_count=1, max_size=None):
        """The vocabulary of tokens seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(token for tokens in token_lists for token in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_count and t not in (PAD, UNK)),
                        key=lambda t: (-counts[t], t))
        return cls([PAD, UNK] + ranked[:max_size])

    def __len__(self):
        return len(self.tokens)

    def encode(self, tokens):
        """Token list -> id list (unknown tokens -> ``unk_id``)."""
        return [self.index.get(t, self.unk_id) for t in tokens]

    def decode(self, ids):
        """Id list -> token list."""
        return [self.tokens[i] for i in ids]


def pad_batch(sequences, pad_id=0, dtype=np.int64):
    """Variable-length id lists -> time-major ids (T, B) padded with ``pad_id``, and lengths (B,); no sorting."""
    lengths = np.array([max(len(s), 1) for s in sequences], dtype=np.int64)
    ids = np.full((int(lengths.max()), len(sequences)), pad_id, dtype=dtype)     # (T, B)
    for b, sequence in enumerate(sequences):
        ids[:len(sequence), b] = sequence
    return ids, lengths


@dataclass
class Batch:
    """One minibatch: the model's inputs (a tuple), its targets, and an optional mask over the targets."""

    inputs: tuple
    targets: object
    mask: object = None


def minibatches(n, batch_size, rng=None):
    """Index arrays that cover range(n) in batches, shuffled by ``rng`` (in order when None)."""
    order = np.arange(n) if rng is None else rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def bucketed_minibatches(lengths, batch_size, rng, pool=8):
    """Shuffled batches of similar lengths (less padding, faster): shuffle, sort each run of ``pool`` batches by
    length, cut it into batches, and shuffle the order of all batches."""
    order = rng.permutation(len(lengths))
    lengths = np.asarray(lengths)
    batches = []
    for start in range(0, len(order), batch_size * pool):
        run = order[start:start + batch_size * pool]
        run = run[np.argsort(lengths[run], kind="stable")]
        batches += [run[i:i + batch_size] for i in range(0, len(run), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def bptt_chunks(ids, batch_size, steps):
    """Truncated-BPTT batches of a long id stream: B parallel streams cut into consecutive (steps, B) chunks.

    Returns Batches whose inputs are ids (T, B) and targets the next ids (T, B); chunk k+1 continues chunk k row
    by row, so a stateful model carries its final state across them.
    """
    ids = np.asarray(ids, dtype=np.int64)
    per_row = (len(ids) - 1) // batch_size
    if per_row < 1:
        raise ValueError(f"a stream of {len(ids)} tokens is too short for {batch_size} parallel rows")
    inputs = ids[:per_row * batch_size].reshape(batch_size, per_row).T          # (N, B)
    targets = ids[1:per_row * batch_size + 1].reshape(batch_size, per_row).T    # (N, B)
    return [Batch((inputs[t:t + steps], None), targets[t:t + steps]) for t in range(0, per_row, steps)]
