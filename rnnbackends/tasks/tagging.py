"""Many-to-many part-of-speech tagging: FORM -> UPOS on Universal Dependencies English-EWT (CoNLL-U)."""
from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import conllu
import numpy as np

from .. import checkpoint
from ..char_tagger import CharTagger
from ..data import WORD, Batch, Vocabulary, minibatches
from ..datasets import default_data, read_text
from ..layers import to_host
from ..losses import categorical_cross_entropy
from ..optimizers import Adam
from ..training import Member, epoch_rng, fingerprint, train_members
from . import TaskResult
from .base import CELL, Data, Task

UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X"]                                       # the 17 universal tags
EXAMPLES = ["I like red apples", "The quick brown fox jumps over the lazy dog.",
            "Yesterday Maria emailed the unhappy customers in Zurich."]
HYPERPARAMETERS = dict(embed_dim=48, char_embed_dim=24, char_hidden_size=64, hidden_size=128, num_layers=1,
                       dropout=0.3, embed_dropout=0.2)
MAX_WORD_CHARS = 20                  # longer words (URLs, e-mail addresses) are spelled by their first and last 10
TRAINING = dict(lr=0.003, batch_size=32, epochs=12, clip_norm=5.0, word_dropout=0.25, lr_decay=0.5)


def read_conllu(path):
    """(words, UPOS tags) per sentence of a CoNLL-U file (plain, .gz or .xz); multiword-token ranges (1-2) and empty
    nodes (1.1) skipped."""
    sentences = []
    try:
        for sentence in conllu.parse_incr(io.StringIO(read_text(path))):
            tokens = [t for t in sentence if isinstance(t["id"], int)]
            if tokens:
                sentences.append(([t["form"] for t in tokens], [t["upos"] for t in tokens]))
    except conllu.exceptions.ParseException as exc:
        raise ValueError(f"{path}: not CoNLL-U ({exc}); give a CoNLL-U file (10 TAB-separated columns per token "
                         "line) or the ud-english-ewt folder of `rnnbackends data fetch`") from None
    if not sentences:
        raise ValueError(f"{path}: no sentences (expected CoNLL-U: 10 TAB-separated columns per token line)")
    for words, tags in sentences:
        unknown = set(tags) - set(UPOS)
        if unknown:
            raise ValueError(f"{path}: tags {sorted(unknown)} are not UPOS tags (sentence {' '.join(words)[:60]!r})")
    return sentences


def conllu_files(data):
    """The train, dev and test CoNLL-U files of a folder (names containing train/dev/test; .gz/.xz allowed); a file
    is the training set, with the bundled dev and test."""
    folder = Path(data) if data else default_data("tagging")
    if folder.is_file():
        return [folder] + conllu_files(None)[1:]
    if not folder.is_dir():
        raise ValueError(f"{folder}: expected a CoNLL-U training file, or a folder with *train*.conllu, "
                         "*dev*.conllu and *test*.conllu")
    files = []
    for part in ("train", "dev", "test"):
        found = sorted(folder.glob(f"*{part}*.conllu")) + sorted(folder.glob(f"*{part}*.conllu.[gx]z"))
        if not found:
            raise ValueError(f"{folder}: no *{part}*.conllu file")
        files.append(found[0])
    return files


def shape(word):
    """The word's shape: X for capitals, x for lower case, d for digits, repeats collapsed (``Zurich`` -> ``Xx``)."""
    classes = ["X" if c.isupper() else "x" if c.islower() else "d" if c.isdigit() else c for c in word]
    return "".join(c for i, c in enumerate(classes) if i == 0 or c != classes[i - 1])[:6]


def features(word):
    """The F = 5 feature strings of one word: lower-cased form, its last 1, 2 and 3 letters, and its shape."""
    lower = word.lower()
    return [f"w:{lower}", f"s1:{lower[-1:]}", f"s2:{lower[-2:]}", f"s3:{lower[-3:]}", f"shape:{shape(word)}"]


NUM_FEATURES = len(features("x"))


def encode_sentence(vocabulary, words):
    """Words -> feature ids (L, F)."""
    return np.array([vocabulary.encode(features(w)) for w in words], dtype=np.int64).reshape(len(words), NUM_FEATURES)


def pad_features(encoded):
    """Feature-id arrays (L_b, F) -> ids (T, B, F) padded with 0, and lengths (B,)."""
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    ids = np.zeros((int(lengths.max()), len(encoded), NUM_FEATURES), dtype=np.int64)   # (T, B, F)
    for b, e in enumerate(encoded):
        ids[:len(e), b] = e
    return ids, lengths


def spelling(word):
    """The characters the char RNN reads: the word, or its first and last 10 when it is longer than 20."""
    half = MAX_WORD_CHARS // 2
    return word if len(word) <= MAX_WORD_CHARS else word[:half] + word[-half:]


def spell(sentences, characters):
    """The distinct words of a batch's sentences as char ids (C, U), their lengths (U,), and word_index (T, B): the
    distinct word at each position (0 on padding)."""
    distinct = {}
    word_index = np.zeros((max(map(len, sentences)), len(sentences)), dtype=np.int64)   # (T, B)
    for b, words in enumerate(sentences):
        for t, word in enumerate(words):
            word_index[t, b] = distinct.setdefault(spelling(word), len(distinct))
    char_lengths = np.array([len(w) for w in distinct], dtype=np.int64)                   # (U,)
    chars = np.zeros((int(char_lengths.max()), len(distinct)), dtype=np.int64)         # (C, U)
    for u, word in enumerate(distinct):
        chars[:len(word), u] = characters.encode(list(word))
    return chars, char_lengths, word_index


def model_inputs(encoded, sentences, characters):
    """The tagger's inputs for a batch: feature ids (T, B, F), lengths (B,), chars (C, U), char_lengths (U,),
    word_index (T, B)."""
    return (*pad_features(encoded), *spell(sentences, characters))


def rare_word_dropout(d, alpha):
    """Per word id, the probability alpha / (alpha + count) that training reads it as ``<unk>``: rare words stand in
    for the unseen words of test time, frequent ones keep their embedding (0 for padding and ``<unk>``)."""
    counts = np.bincount(np.concatenate(d.encoded["train"])[:, 0], minlength=len(d.vocabulary)).astype(float)
    return np.where(counts > 0, alpha / (alpha + counts), 0.0)                  # (V,)


def batches_of(d, part, batch_size, rng=None, word_dropout=None):
    """Padded Batches of one part; in training each word id w becomes ``<unk>`` with probability ``word_dropout[w]``
    (its suffixes, shape and spelling stay)."""
    out = []
    for rows in minibatches(len(d.parts[part]), batch_size, rng):
        inputs = model_inputs([d.encoded[part][i] for i in rows], [d.parts[part][i][0] for i in rows], d.characters)
        ids = inputs[0]
        if word_dropout is not None:
            dropped = rng.random(ids.shape[:2]) < word_dropout[ids[:, :, 0]]     # (T, B)
            ids[:, :, 0] = np.where(dropped, d.vocabulary.unk_id, ids[:, :, 0])
        targets = np.zeros(ids.shape[:2], dtype=np.int64)                        # (T, B)
        for b, i in enumerate(rows):
            targets[:len(d.tag_ids[part][i]), b] = d.tag_ids[part][i]
        mask = np.arange(ids.shape[0])[:, None] < inputs[1][None, :]             # (T, B)
        out.append(Batch(inputs, targets, mask))
    return out


def predict_tags(model, characters, encoded, sentences, batch_size=256):
    """The most probable tag id of every word: a list of (L,) arrays."""
    model.eval()
    predictions = []
    for chunk in minibatches(len(encoded), batch_size):
        inputs = model_inputs([encoded[i] for i in chunk], [sentences[i] for i in chunk], characters)
        best = to_host(model.forward(*inputs)).argmax(axis=-1)                   # (T, B)
        predictions += [best[:inputs[1][b], b] for b in range(len(chunk))]
    return predictions


def most_frequent_tag(train_sentences):
    """The baseline tagger: each training word's most frequent tag, and the overall most frequent one for the rest."""
    per_word, overall = {}, Counter()
    for words, tags in train_sentences:
        for w, t in zip(words, tags):
            per_word.setdefault(w.lower(), Counter())[t] += 1
            overall[t] += 1
    default = overall.most_common(1)[0][0]
    return lambda word: per_word[word.lower()].most_common(1)[0][0] if word.lower() in per_word else default


def accuracies(predicted, gold, oov):
    """(all-token accuracy, OOV-token accuracy) from flat arrays of predicted and gold tags and an OOV mask."""
    correct = predicted == gold
    return float(correct.mean()), float(correct[oov].mean())


def prepare(data, vocabulary=None, characters=None):
    """The three parts' sentences, the feature and character vocabularies (built on train unless given) and every
    part's ids."""
    parts = dict(zip(("train", "dev", "test"), (read_conllu(f) for f in conllu_files(data))))
    if vocabulary is None:
        vocabulary = Vocabulary.build(features(w) for words, _ in parts["train"] for w in words)
        characters = Vocabulary.build(list(w) for words, _ in parts["train"] for w in words)
    encoded = {name: [encode_sentence(vocabulary, words) for words, _ in part] for name, part in parts.items()}
    tag_ids = {name: [np.array([UPOS.index(t) for t in tags]) for _, tags in part] for name, part in parts.items()}
    return SimpleNamespace(parts=parts, vocabulary=vocabulary, characters=characters, encoded=encoded,
                           tag_ids=tag_ids)


class Tagging(Task):
    """Many-to-many of the same length: a word's features -> its universal part-of-speech tag."""

    name = "tagging"
    summary = "many-to-many part-of-speech tagging (UD English-EWT) -> UPOS accuracy, also on unseen words"
    data = Data("UD English-EWT: a 2,065-sentence train subset, dev and test",
                "a folder with *train*, *dev* and *test* CoNLL-U files (.conllu, .conllu.gz or .conllu.xz), or "
                "one CoNLL-U training file (tested on the bundled dev and test)",
                lambda: default_data("tagging"), kind="file or folder")
    metric = "test UPOS accuracy"
    higher_is_better = True
    baselines = ("most frequent tag",)
    options = (CELL,)

    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, cell="rnn"):
        """Train the feature tagger on train, select on dev, report test accuracy (all and OOV) against the baseline."""
        started = time.perf_counter()
        d = prepare(data)
        model = CharTagger(len(d.vocabulary), NUM_FEATURES, len(d.characters), len(UPOS), **HYPERPARAMETERS,
                           cell=cell, backend=backend, seed=seed)
        word_dropout = rare_word_dropout(d, TRAINING["word_dropout"])
        batches = lambda epoch: batches_of(d, "train", TRAINING["batch_size"], epoch_rng(seed, epoch),  # noqa: E731
                                           word_dropout)

        def validate(m):
            """Dev loss and accuracy."""
            losses, correct, total = [], 0, 0
            for batch in batches_of(d, "dev", 256):
                logits = m.forward(*batch.inputs)
                loss, _ = categorical_cross_entropy(logits, batch.targets, batch.mask)
                losses.append(loss * batch.mask.sum())
                correct += int(((to_host(logits).argmax(-1) == batch.targets) & batch.mask).sum())
                total += int(batch.mask.sum())
            return {"val_loss": sum(losses) / total, "val_accuracy": correct / total}

        epochs = TRAINING["epochs"] if epochs is None else epochs
        meta = {"task": self.name, "vocabulary": d.vocabulary.tokens, "characters": d.characters.tokens, "tags": UPOS}
        run = train_members([Member(model, Adam(TRAINING["lr"]), batches)], categorical_cross_entropy, validate,
                            epochs=epochs, meta=meta, save=save, resume=resume,
                            data_fingerprint=fingerprint(d.parts["train"], d.vocabulary.tokens, seed, cell),
                            monitor="val_accuracy", higher_is_better=True, clip_norm=TRAINING["clip_norm"],
                            lr_decay=TRAINING["lr_decay"], progress=progress, log=log, description="tagging")
        best = run.bests[0]
        result = self.score(model, d, run.histories, started)
        result.details["best_epoch"] = best["epoch"] if best else None
        if save:
            checkpoint.save(save, model, {**meta, "epoch": result.details["best_epoch"],
                                          "test_accuracy": result.value,
                                          "test_oov_accuracy": result.details["oov_accuracy"]})
        return result

    def score(self, model, d, histories, started):
        """Test accuracy (all words and words unseen in training) of ``model`` and of the baseline."""
        train_s, test_s = d.parts["train"], d.parts["test"]
        train_words = {w.lower() for words, _ in train_s for w in words}
        test_words = [w for words, _ in test_s for w in words]
        gold = np.concatenate(d.tag_ids["test"])
        oov = np.array([w.lower() not in train_words for w in test_words])
        predicted = predict_tags(model, d.characters, d.encoded["test"], [words for words, _ in test_s])
        ours = accuracies(np.concatenate(predicted), gold, oov)
        baseline_tagger = most_frequent_tag(train_s)
        baseline = accuracies(np.array([UPOS.index(baseline_tagger(w)) for w in test_words]), gold, oov)
        return TaskResult(task=self.name, backend=model.backend.name, metric=self.metric, value=ours[0],
                          baselines={"most frequent tag": baseline[0]}, higher_is_better=True, histories=histories,
                          seconds=time.perf_counter() - started,
                          details={"oov_accuracy": ours[1], "baseline_oov_accuracy": baseline[1],
                                   "oov_rate": float(oov.mean()), "train_sentences": len(train_s),
                                   "dev_sentences": len(d.parts["dev"]), "test_sentences": len(test_s),
                                   "test_words": len(test_words), "feature_vocabulary": len(d.vocabulary)},
                          examples=tag_lines(model, d.vocabulary, d.characters, EXAMPLES))

    def evaluate(self, directory, data=None, *, backend=None):
        """Test accuracy of a saved tagger on ``data`` (encoded with the checkpoint's vocabulary)."""
        started = time.perf_counter()
        models, meta = load_tagger(directory, backend)
        return self.score(models[0], prepare(data, Vocabulary(meta["vocabulary"]), Vocabulary(meta["characters"])),
                          [], started)

    def predict(self, directory, lines, *, backend=None):
        """One line of ``word/TAG`` tokens per input line, from a saved tagging checkpoint."""
        models, meta = load_tagger(directory, backend)
        return tag_lines(models[0], Vocabulary(meta["vocabulary"]), Vocabulary(meta["characters"]), lines)


def load_tagger(directory, backend=None):
    """The tagger saved in ``directory`` and its metadata."""
    return checkpoint.load(directory, backend, task="tagging", classes=("CharTagger",))


def tag_lines(model, vocabulary, characters, lines):
    """``word/TAG`` tokens for each line of raw text (split into words and punctuation marks)."""
    sentences = [WORD.findall(line) for line in lines]
    present = [i for i, words in enumerate(sentences) if words]
    predicted = predict_tags(model, characters, [encode_sentence(vocabulary, sentences[i]) for i in present],
                             [sentences[i] for i in present])
    out = [""] * len(lines)
    for i, tags in zip(present, predicted):
        out[i] = " ".join(f"{w}/{UPOS[t]}" for w, t in zip(sentences[i], tags))
    return out


TASK = Tagging()
