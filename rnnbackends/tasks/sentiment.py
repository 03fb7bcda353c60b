"""Many-to-one sentiment classification on the UCI Sentiment Labelled Sentences (yelp + amazon + imdb pooled)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import checkpoint
from ..data import Batch, Tokenizer, Vocabulary, bucketed_minibatches, minibatches, pad_batch
from ..layers import to_host
from ..losses import binary_cross_entropy
from ..models import SequenceClassifier
from ..optimizers import Adam
from ..training import fit
from . import TaskResult

BUNDLED = Path(__file__).resolve().parent.parent / "datasets" / "sentiment"
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
        with open(file, encoding="utf-8", newline="") as f:
            text = f.read()
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


def train(data=None, backend=None, epochs=None, seed=0, save=None, progress=True, log=None):
    """Train the sentiment classifier; returns a TaskResult with test accuracy against both baselines."""
    started = time.perf_counter()
    sentences, labels = read_labelled_sentences(data or BUNDLED)
    tokenizer = Tokenizer("word")
    tokens = [tokenizer(s) for s in sentences]
    train_idx, val_idx, test_idx = split(len(sentences))
    vocabulary = Vocabulary.build([tokens[i] for i in train_idx])
    ids = [vocabulary.encode(t) for t in tokens]
    base = baselines(tokens, labels, train_idx, val_idx, test_idx, vocabulary)
    epochs = TRAINING["epochs"] if epochs is None else epochs
    models, histories = [], []
    for member in range(TRAINING["ensemble"]):
        model = SequenceClassifier(len(vocabulary), 2, **HYPERPARAMETERS, backend=backend,
                                   seed=seed * 1000 + member)
        rng = np.random.default_rng(seed * 1000 + member)

        def validate(m):
            """Validation loss and accuracy of one ensemble member."""
            p = probabilities([m], ids, val_idx)
            y = labels[val_idx]
            loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
            return {"val_loss": float(loss), "val_accuracy": float(((p > 0.5) == y).mean())}

        history = fit(model, binary_cross_entropy, Adam(TRAINING["lr"]),
                      lambda epoch: batches_of(ids, labels, train_idx, TRAINING["batch_size"], rng),
                      epochs=epochs, validate=validate, monitor="val_loss", patience=TRAINING["patience"],
                      clip_norm=TRAINING["clip_norm"], progress=progress, log=log,
                      description=f"sentiment model {member + 1}/{TRAINING['ensemble']}")
        models.append(model)
        histories.append(history)
    test_p = probabilities(models, ids, test_idx)
    accuracy = float(((test_p > 0.5) == labels[test_idx]).mean())
    examples = [(s, float(p)) for s, p in zip(EXAMPLES, predict_probabilities(models, tokenizer, vocabulary, EXAMPLES))]
    if save:
        checkpoint.save(save, models, {"task": "sentiment", "tokenizer": tokenizer.config(),
                                       "vocabulary": vocabulary.tokens, "test_accuracy": accuracy})
    return TaskResult(task="sentiment", backend=models[0].backend.name, metric="test accuracy", value=accuracy,
                      baselines={"majority class": base["majority"], "bag-of-words logistic regression": base["bow_logreg"]},
                      higher_is_better=True, histories=histories, seconds=time.perf_counter() - started,
                      details={"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx),
                               "vocabulary": len(vocabulary), "ensemble": len(models)},
                      examples=[f"{p:.2f} {'positive' if p > 0.5 else 'negative'}  {s}" for s, p in examples])


def predict_probabilities(models, tokenizer, vocabulary, texts):
    """P(positive) of each text."""
    ids = [vocabulary.encode(tokenizer(t)) for t in texts]
    return probabilities(models, ids, np.arange(len(texts)))


def predict(directory, lines, backend=None):
    """One ``label<TAB>P(positive)`` line per input line, from a saved sentiment checkpoint."""
    models, meta = checkpoint.load(directory, backend)
    tokenizer, vocabulary = Tokenizer(**meta["tokenizer"]), Vocabulary(meta["vocabulary"])
    p = predict_probabilities(models, tokenizer, vocabulary, lines)
    return [f"{'positive' if q > 0.5 else 'negative'}\t{q:.4f}" for q in p]
