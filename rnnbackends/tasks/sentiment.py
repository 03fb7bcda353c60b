"""Many-to-one sentiment classification on the UCI Sentiment Labelled Sentences (yelp + amazon + imdb pooled)."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import checkpoint
from ..data import Batch, Tokenizer, Vocabulary, bucketed_minibatches, minibatches, pad_batch
from ..datasets import default_data, read_text
from ..layers import to_host
from ..losses import binary_cross_entropy
from ..models import SequenceClassifier
from ..optimizers import Adam
from ..training import Member, fingerprint, train_members
from . import TaskResult
from .base import CELL, Data, Option, Task, whole_number

SPLIT_SEED = 20150810          # fixed: the split never depends on --seed (KDD 2015, the dataset's paper)
EXAMPLES = ["Good, cheap food!", "The battery died after two days and support never answered.",
            "Not bad at all, I would watch it again.", "Worst purchase ever."]
HYPERPARAMETERS = dict(embed_dim=64, hidden_size=64, bidirectional=True, pooling="max", dropout=0.5,
                       embed_dropout=0.25)
TRAINING = dict(lr=0.005, batch_size=64, epochs=12, patience=2, clip_norm=5.0, ensemble=5)


def read_labelled_sentences(path):
    """(sentences, labels) from one ``sentence<TAB>label`` file, or every ``*_labelled.txt`` in a folder."""
    path = Path(path)
    files = sorted(path.glob("*_labelled.txt")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no *_labelled.txt files in this folder")
    sentences, labels = [], []
    for file in files:
        text = read_text(file)
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            sentence, tab, label = line.rstrip("\r").rpartition("\t")
            if not tab or label.strip() not in ("0", "1"):
                raise ValueError(f"{file}:{number}: expected 'sentence<TAB>label' with label 0 or 1, "
                                 f"got {line[:60]!r}")
            sentences.append(sentence.strip())
            labels.append(int(label))
    if len(sentences) < 20:
        raise ValueError(f"{path}: only {len(sentences)} labelled sentences; need at least 20")
    return sentences, np.array(labels, dtype=np.int64)


def split(n):
    """Deterministic 80/10/10 train/validation/test index arrays (a fixed permutation, whatever the seed)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = n_val = n // 10
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def stratified_folds(labels, k):
    """k (train, validation, test) index triples of stratified k-fold cross-validation (fixed, whatever the seed):
    each fold is the test part once and the validation part of the fold before it; the other k - 2 train."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    fold = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rows = order[labels[order] == label]
        fold[rows] = np.arange(len(rows)) % k                          # each class dealt round the folds
    parts = [np.flatnonzero(fold == i) for i in range(k)]
    return [(np.flatnonzero((fold != i) & (fold != (i + 1) % k)), parts[(i + 1) % k], parts[i]) for i in range(k)]


def bag_of_words(token_lists, vocabulary):
    """Binary bag-of-words features (N, V) as sparse (row, column) index pairs of the 1 entries, with N and V."""
    rows, columns = [], []
    for i, tokens in enumerate(token_lists):
        present = sorted(set(vocabulary.encode(tokens)) - {vocabulary.pad_id, vocabulary.unk_id})
        rows += [i] * len(present)
        columns += present
    return np.array(rows, dtype=np.int64), np.array(columns, dtype=np.int64), len(token_lists), len(vocabulary)


def logistic_regression(features, labels, l2, steps=400, lr=0.05):
    """L2-regularised logistic regression on sparse binary features, fitted by full-batch Adam -> (w (V,), b)."""
    rows, columns, n, V = features
    w, b = np.random.default_rng(0).normal(0, 0.01, V), 0.0
    m, v, mb, vb = np.zeros_like(w), np.zeros_like(w), 0.0, 0.0
    for t in range(1, steps + 1):
        p = 1.0 / (1.0 + np.exp(-(np.bincount(rows, w[columns], minlength=n) + b)))     # σ(X·w + b)
        g = np.bincount(columns, (p - labels)[rows], minlength=V) / n + l2 * w            # Xᵀ(p - y)/n + λw
        gb = float((p - labels).mean())
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb * gb
        w -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        b -= lr * (mb / (1 - 0.9 ** t)) / (np.sqrt(vb / (1 - 0.999 ** t)) + 1e-8)
    return w, b


def logistic_scores(features, w, b):
    """X·w + b for sparse binary features."""
    rows, columns, n, _ = features
    return np.bincount(rows, w[columns], minlength=n) + b


def baselines(tokens, labels, train, val, test, vocabulary):
    """Test accuracy of the majority class and of bag-of-words logistic regression (L2 chosen on validation)."""
    majority = int(labels[train].mean() >= 0.5)
    features = {part: bag_of_words([tokens[i] for i in idx], vocabulary)
                for part, idx in (("train", train), ("val", val), ("test", test))}
    best = None
    for l2 in (1e-4, 1e-3, 1e-2):
        w, b = logistic_regression(features["train"], labels[train], l2)
        val_accuracy = float(((logistic_scores(features["val"], w, b) > 0) == labels[val]).mean())
        if best is None or val_accuracy > best[0]:
            best = (val_accuracy, w, b)
    _, w, b = best
    return {"majority": float((labels[test] == majority).mean()),
            "bow_logreg": float(((logistic_scores(features["test"], w, b) > 0) == labels[test]).mean())}


def batches_of(ids, labels, indices, batch_size, rng=None):
    """Padded time-major Batches of the sentences ``indices``: in order, or shuffled in length buckets by ``rng``."""
    out = []
    chunks = minibatches(len(indices), batch_size) if rng is None else \
        bucketed_minibatches([len(ids[i]) for i in indices], batch_size, rng)
    for chunk in chunks:
        rows = indices[chunk]
        padded, lengths = pad_batch([ids[i] for i in rows])
        out.append(Batch((padded, lengths), labels[rows]))
    return out


def probabilities(models, ids, indices, batch_size=256):
    """P(positive) for the sentences ``indices``, averaged over an ensemble of models (batched by length)."""
    by_length = np.argsort([len(ids[i]) for i in indices], kind="stable")
    total = np.zeros(len(indices))
    for model in models:
        model.eval()
        for start in range(0, len(indices), batch_size):
            rows = by_length[start:start + batch_size]
            logits = to_host(model.forward(*pad_batch([ids[i] for i in np.asarray(indices)[rows]]))).astype(np.float64)
            total[rows] += 1.0 / (1.0 + np.exp(-logits))
    return total / len(models)


def prepare(data):
    """Sentences, labels, the fixed split, the training part's vocabulary and every sentence's ids."""
    sentences, labels = read_labelled_sentences(data or default_data("sentiment"))
    tokenizer = Tokenizer("word")
    d = SimpleNamespace(sentences=sentences, labels=labels, tokenizer=tokenizer,
                        tokens=[tokenizer(s) for s in sentences])
    return with_split(d, *split(len(sentences)))


def with_split(d, train, val, test):
    """The prepared data ``d`` on another split: its parts, the training part's vocabulary, every sentence's ids."""
    vocabulary = Vocabulary.build([d.tokens[i] for i in train])
    return SimpleNamespace(**{**vars(d), "train": train, "val": val, "test": test, "vocabulary": vocabulary,
                              "ids": [vocabulary.encode(t) for t in d.tokens]})


class Sentiment(Task):
    """Many-to-one: a sentence's words -> positive or negative."""

    name = "sentiment"
    summary = "many-to-one sentence sentiment (UCI yelp+amazon+imdb) -> test accuracy"
    data = Data("UCI Sentiment Labelled Sentences, yelp + amazon + imdb, 3,000 sentences",
                "a 'sentence<TAB>label' file or a folder of *_labelled.txt files",
                lambda: default_data("sentiment"), kind="file or folder")
    metric = "test accuracy"
    higher_is_better = True
    baselines = ("majority class", "bag-of-words logistic regression")
    options = (CELL, Option("cv", "also report stratified K-fold cross-validated accuracy (mean ± std over the K "
                              "folds) of the model and the baselines, e.g. --cv 10", 0,
                              type=whole_number(3, " (one fold tests, one validates, the rest train)")))

    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, cell="rnn", cv=0):
        """Train an ensemble of classifiers; returns a TaskResult with test accuracy against both baselines, and
        with ``cv`` K the K-fold cross-validated accuracy of the same recipe and of logistic regression."""
        started = time.perf_counter()
        d = prepare(data)
        meta = {"task": self.name, "tokenizer": d.tokenizer.config(), "vocabulary": d.vocabulary.tokens}
        run = self.fit(d, meta, backend=backend, epochs=epochs, seed=seed, save=save, resume=resume,
                       progress=progress, log=log, cell=cell)
        result = self.score(run.models, d, run.histories, started)
        if save:
            checkpoint.save(save, run.models, {**meta, "test_accuracy": result.value})
        if cv:
            result.details[f"{cv}-fold cross-validation"] = self.cross_validate(
                d, cv, backend=backend, epochs=epochs, seed=seed, log=log, cell=cell)
            result.seconds = time.perf_counter() - started
        return result

    def fit(self, d, meta, *, backend, epochs, seed, save=None, resume=False, progress=False, log=None, cell="rnn"):
        """Train the ensemble on the training part of ``d`` (early stopping on its validation part): a ``Run``."""
        epochs = TRAINING["epochs"] if epochs is None else epochs
        members = []
        for member in range(TRAINING["ensemble"]):
            model = SequenceClassifier(len(d.vocabulary), 2, **HYPERPARAMETERS, cell=cell, backend=backend,
                                       seed=seed * 1000 + member)
            rng = np.random.default_rng(seed * 1000 + member)
            members.append(Member(model, Adam(TRAINING["lr"]), lambda epoch, rng=rng: batches_of(
                d.ids, d.labels, d.train, TRAINING["batch_size"], rng), rngs=[rng]))

        def validate(m):
            """Validation loss and accuracy of one ensemble member."""
            p = probabilities([m], d.ids, d.val)
            y = d.labels[d.val]
            loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
            return {"val_loss": float(loss), "val_accuracy": float(((p > 0.5) == y).mean())}

        return train_members(members, binary_cross_entropy, validate, epochs=epochs, meta=meta, save=save,
                             resume=resume, data_fingerprint=fingerprint(d.sentences, d.labels, d.vocabulary.tokens,
                                                                         seed, cell),
                             patience=TRAINING["patience"], clip_norm=TRAINING["clip_norm"], progress=progress,
                             log=log, description="sentiment")

    def cross_validate(self, d, k, *, backend, epochs, seed, log=None, cell="rnn"):
        """Stratified k-fold test accuracy of the ensemble and of both baselines: mean, std over folds, each fold."""
        scores = {"ours": [], "bag-of-words logistic regression": [], "majority class": []}
        for i, (train, val, test) in enumerate(stratified_folds(d.labels, k)):
            fold = with_split(d, train, val, test)
            run = self.fit(fold, {"task": self.name}, backend=backend, epochs=epochs, seed=seed, cell=cell)
            base = baselines(fold.tokens, fold.labels, train, val, test, fold.vocabulary)
            p = probabilities(run.models, fold.ids, test)
            for name, value in (("ours", float(((p > 0.5) == d.labels[test]).mean())),
                                ("bag-of-words logistic regression", base["bow_logreg"]),
                                ("majority class", base["majority"])):
                scores[name].append(value)
            if log is not None:
                log(f"fold {i + 1}/{k}: ours {scores['ours'][-1]:.4f}, logistic regression "
                    f"{scores['bag-of-words logistic regression'][-1]:.4f} ({len(test)} test sentences)")
        return {name: {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v)), 4),
                       "folds": [round(x, 4) for x in v]} for name, v in scores.items()}

    def score(self, models, d, histories, started):
        """The TaskResult of ``models`` on the test part of the prepared data ``d``."""
        test_p = probabilities(models, d.ids, d.test)
        accuracy = float(((test_p > 0.5) == d.labels[d.test]).mean())
        base = baselines(d.tokens, d.labels, d.train, d.val, d.test, d.vocabulary)
        examples = predict_probabilities(models, d.tokenizer, d.vocabulary, EXAMPLES)
        return TaskResult(task=self.name, backend=models[0].backend.name, metric=self.metric, value=accuracy,
                          baselines={"majority class": base["majority"],
                                     "bag-of-words logistic regression": base["bow_logreg"]},
                          higher_is_better=True, histories=histories, seconds=time.perf_counter() - started,
                          details={"train": len(d.train), "validation": len(d.val), "test": len(d.test),
                                   "vocabulary": len(d.vocabulary), "ensemble": len(models)},
                          examples=[f"{p:.2f} {'positive' if p > 0.5 else 'negative'}  {s}"
                                    for s, p in zip(EXAMPLES, examples)])

    def evaluate(self, directory, data=None, *, backend=None):
        """Test accuracy of a saved ensemble on the split of ``data`` (encoded with the checkpoint's vocabulary)."""
        started = time.perf_counter()
        models, meta = checkpoint.load(directory, backend, task="sentiment", classes=("SequenceClassifier",))
        d = prepare(data)
        d.tokenizer, saved = Tokenizer(**meta["tokenizer"]), Vocabulary(meta["vocabulary"])
        d.ids = [saved.encode(t) for t in d.tokens]
        result = self.score(models, d, [], started)
        result.examples = [f"{p:.2f} {'positive' if p > 0.5 else 'negative'}  {s}" for s, p in
                           zip(EXAMPLES, predict_probabilities(models, d.tokenizer, saved, EXAMPLES))]
        return result

    def predict(self, directory, lines, *, backend=None):
        """One ``label<TAB>P(positive)`` line per input line, from a saved sentiment checkpoint."""
        models, meta = checkpoint.load(directory, backend, task="sentiment", classes=("SequenceClassifier",))
        tokenizer, vocabulary = Tokenizer(**meta["tokenizer"]), Vocabulary(meta["vocabulary"])
        p = predict_probabilities(models, tokenizer, vocabulary, lines)
        return [f"{'positive' if q > 0.5 else 'negative'}\t{q:.4f}" for q in p]


def predict_probabilities(models, tokenizer, vocabulary, texts):
    """P(positive) of each text."""
    ids = [vocabulary.encode(tokenizer(t)) for t in texts]
    return probabilities(models, ids, np.arange(len(texts)))


TASK = Sentiment()
