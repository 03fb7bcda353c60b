"""One-to-many text generation: a character-level (or word-level) language model on tiny Shakespeare."""
from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np

from .. import checkpoint
from ..data import Tokenizer, Vocabulary, bptt_chunks
from ..datasets import default_data
from ..datasets import read_text as read_file
from ..losses import categorical_cross_entropy
from ..models import LanguageModel
from ..optimizers import Adam
from ..training import Member, fingerprint, train_members
from . import TaskResult
from .base import CELL, Data, Option, Task, number_in, whole_number

EMBED_DIM = {"char": 32, "word": 64}
TRAINING = dict(lr=0.002, clip_norm=5.0, max_words=10000)
SIMPLE_MODEL = dict(layers=1, hidden=256, dropout=0.0, batch_size=64, bptt=100, epochs=20)   # the lecture's RNN
GATED_MODEL = dict(layers=2, hidden=256, dropout=0.2, batch_size=32, bptt=64, epochs=13)    # --cell gru|lstm
VALIDATION = dict(batch_size=16, steps=200)
PRIME, SAMPLE_LENGTH, TEMPERATURE = "ROMEO:", 500, 0.8


def read_text(data):
    """The whole text of ``data`` (plain, .gz or .xz; default: the bundled tiny Shakespeare)."""
    path = Path(data) if data else default_data("textgen")
    text = read_file(path)
    if len(text) < 1000:
        raise ValueError(f"{path}: only {len(text)} characters; a language model needs at least 1000")
    return text


def split_text(text):
    """The first 90 % for training, the last 10 % for validation (by characters)."""
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def tokenizer_for(level):
    """Characters as they are, or lower-cased words and punctuation marks."""
    return Tokenizer("char", lower=False) if level == "char" else Tokenizer("word")


def detokenize(tokens, level):
    """Tokens back to text: characters joined, words joined by spaces with no space before punctuation."""
    if level == "char":
        return "".join(tokens)
    return re.sub(r" ([^\w\s'])", r"\1", " ".join(tokens))


def ngram_baselines(train_ids, val_ids, V):
    """Validation cross-entropy in nats per token of add-one-smoothed unigram and bigram models fitted on train."""
    unigram = np.bincount(train_ids, minlength=V) + 1.0
    unigram_nats = float(-np.log(unigram[val_ids] / unigram.sum()).mean())
    pairs = np.zeros((V, V))
    np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
    pairs += 1.0
    conditional = pairs / pairs.sum(axis=1, keepdims=True)
    bigram_nats = float(-np.log(conditional[val_ids[:-1], val_ids[1:]]).mean())
    return {"unigram": unigram_nats, "bigram": bigram_nats}


def evaluate_stream(model, ids):
    """Cross-entropy in nats per token of a stateful model over a stream, read as parallel rows, state carried."""
    model.eval()
    model.reset_state()
    total, count = 0.0, 0
    for batch in bptt_chunks(ids, VALIDATION["batch_size"], VALIDATION["steps"]):
        loss, _ = categorical_cross_entropy(model.forward(batch.inputs[0]), batch.targets)
        total += loss * batch.targets.size
        count += batch.targets.size
    model.reset_state()
    return total / count


class Textgen(Task):
    """One-to-many: a language model that reads text and writes more of it."""

    name = "textgen"
    summary = "character (or word) language model on tiny Shakespeare -> validation nats/char; generation"
    data = Data("tiny Shakespeare, 1,115,394 characters", "a UTF-8 text file (plain, .gz or .xz)",
                lambda: default_data("textgen"))
    metric = "validation nats/char"
    higher_is_better = False
    baselines = ("unigram", "bigram")
    options = (Option("level", "model characters or words", default="char", choices=("char", "word")), CELL,
               Option("layers", "stacked recurrent layers (default 1; 2 with a gated --cell)", type=whole_number(1)),
               Option("hidden", "units H per recurrent layer (default 256)", type=whole_number(1)),
               Option("dropout", "dropout between stacked layers and before the output layer (default 0; 0.2 with "
                      "a gated --cell)", type=number_in(0, 1, "a dropout rate")),
               Option("batch_size", "parallel rows of the text stream per batch (default 64; 32 with a gated "
                      "--cell)", type=whole_number(1)),
               Option("bptt", "steps per truncated-BPTT chunk, the state carried across chunks (default 100; 64 "
                      "with a gated --cell)", type=whole_number(1)),
               Option("lr_decay", "multiply the learning rate by this after an epoch that does not lower the "
                      "validation loss (1: constant)", 0.5,
                      type=number_in(0, 1, "a factor", include_low=False, include_high=True)))

    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, level="char", cell="rnn", layers=None, hidden=None, dropout=None, batch_size=None, bptt=None,
              lr_decay=0.5):
        """Train the stateful language model with truncated BPTT; report validation nats per token against n-grams.
        Options left None (and ``epochs``) take SIMPLE_MODEL's values with the simple RNN, else GATED_MODEL's."""
        started = time.perf_counter()
        defaults = SIMPLE_MODEL if cell == "rnn" else GATED_MODEL
        layers, hidden, dropout, batch_size, bptt, epochs = (
            defaults[name] if value is None else value for name, value in (
                ("layers", layers), ("hidden", hidden), ("dropout", dropout), ("batch_size", batch_size),
                ("bptt", bptt), ("epochs", epochs)))
        self.check_options(dict(level=level, cell=cell, layers=layers, hidden=hidden, dropout=dropout,
                                batch_size=batch_size, bptt=bptt, lr_decay=lr_decay))   # before any work
        tokenizer = tokenizer_for(level)
        train_text, val_text = split_text(read_text(data))
        train_tokens = tokenizer(train_text)
        vocabulary = Vocabulary.build([train_tokens], max_size=TRAINING["max_words"] if level == "word" else None)
        train_ids = np.array(vocabulary.encode(train_tokens), dtype=np.int64)
        val_ids = np.array(vocabulary.encode(tokenizer(val_text)), dtype=np.int64)
        model = LanguageModel(len(vocabulary), EMBED_DIM[level], hidden, layers, dropout, cell=cell, stateful=True,
                              backend=backend, seed=seed)
        chunks = bptt_chunks(train_ids, batch_size, bptt)                         # in order: the state carries

        def validate(m):
            """Validation nats (and bits) per token."""
            loss = evaluate_stream(m, val_ids)
            return {"val_loss": loss, "val_bits": loss / math.log(2)}

        meta = {"task": self.name, "level": level, "tokenizer": tokenizer.config(), "vocabulary": vocabulary.tokens}
        run = train_members([Member(model, Adam(TRAINING["lr"]), lambda epoch: chunks)], categorical_cross_entropy,
                            validate, epochs=epochs, meta=meta, save=save, resume=resume,
                            data_fingerprint=fingerprint(train_ids, vocabulary.tokens, level, seed, cell, layers,
                                                         hidden, dropout, batch_size, bptt, lr_decay),
                            clip_norm=TRAINING["clip_norm"], lr_decay=lr_decay, progress=progress, log=log,
                            description=f"textgen ({level})")
        best = run.bests[0]
        result = self.score(model, vocabulary, level, train_ids, val_ids, run.histories, started, seed)
        result.details["best_epoch"] = best["epoch"] if best else None
        if save:
            unit = "char" if level == "char" else "word"
            checkpoint.save(save, model, {**meta, "epoch": result.details["best_epoch"],
                                          f"val_nats_per_{unit}": result.value})
        return result

    def score(self, model, vocabulary, level, train_ids, val_ids, histories, started, seed=0):
        """Validation nats per token of ``model`` against the n-gram baselines, and a sample."""
        nats = evaluate_stream(model, val_ids)
        unit = "char" if level == "char" else "word"
        sample = generate_text(model, vocabulary, level, PRIME if level == "char" else PRIME.lower(), SAMPLE_LENGTH,
                               TEMPERATURE, seed=seed)
        return TaskResult(task=self.name, backend=model.backend.name, metric=f"validation nats/{unit}", value=nats,
                          baselines=ngram_baselines(train_ids, val_ids, len(vocabulary)), higher_is_better=False,
                          histories=histories, seconds=time.perf_counter() - started,
                          details={f"bits_per_{unit}": nats / math.log(2), "train_tokens": len(train_ids),
                                   "validation_tokens": len(val_ids), "vocabulary": len(vocabulary),
                                   "level": level},
                          examples=[sample])

    def evaluate(self, directory, data=None, *, backend=None):
        """Validation nats per token of a saved language model on the last 10 % of ``data``."""
        started = time.perf_counter()
        models, meta = checkpoint.load(directory, backend, task="textgen", classes=("LanguageModel",))
        tokenizer, vocabulary = Tokenizer(**meta["tokenizer"]), Vocabulary(meta["vocabulary"])
        train_text, val_text = split_text(read_text(data))
        encode = lambda text: np.array(vocabulary.encode(tokenizer(text)), dtype=np.int64)  # noqa: E731
        return self.score(models[0], vocabulary, meta["level"], encode(train_text), encode(val_text), [], started)

    def predict(self, directory, lines, *, backend=None):
        """Text generation has no line-by-line prediction: point to ``generate``."""
        raise ValueError(f"{directory}: a textgen checkpoint; sample from it with "
                         "'rnnbackends generate --checkpoint DIR'")


def generate_text(model, vocabulary, level, prime, length, temperature=0.8, top_k=None, seed=None):
    """``prime`` followed by ``length`` sampled tokens, as text."""
    tokens = tokenizer_for(level)(prime) or ["\n"]
    ids = model.generate(vocabulary.encode(tokens), length, temperature, top_k, np.random.default_rng(seed),
                         banned=(vocabulary.pad_id, vocabulary.unk_id))             # never print <pad> or <unk>
    return detokenize(tokens + vocabulary.decode(ids), level)


def generate(directory, prime=PRIME, length=SAMPLE_LENGTH, temperature=TEMPERATURE, top_k=None, seed=None,
             backend=None):
    """Text sampled from a saved textgen checkpoint."""
    models, meta = checkpoint.load(directory, backend, task="textgen", classes=("LanguageModel",))
    return generate_text(models[0], Vocabulary(meta["vocabulary"]), meta["level"], prime, length, temperature,
                         top_k, seed)


TASK = Textgen()
