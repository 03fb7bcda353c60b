"""Speech recognition: spoken digit strings in, text out, by a stacked bidirectional RNN with a CTC output layer.

The default corpus ships with the package (``rnnbackends/datasets/speech``, made by ``rnnbackends data make
speech --bundle``): eSpeak NG voices saying 1-7 digits, perturbed, with test voices the training set never heard.
``--data DIR`` takes any folder of audio files with a ``transcripts.tsv``; the label set comes from the transcripts:
their words when there are at most 64 distinct ones (digits, commands), else their characters.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import checkpoint
from ..ctc import beam_decode, ctc_loss, greedy_decode
from ..data import Batch, bucketed_minibatches, minibatches
from ..datasets import default_data
from ..layers import to_host
from ..optimizers import Adam
from ..speech.audio import read_audio, resample
from ..speech.corpus import read_corpus
from ..speech.features import NUM_MELS, utterance_features
from ..speech.model import FrameClassifier, SpeechRecognizer
from ..training import Member, fingerprint, train_members
from . import TaskResult
from .base import CELL, Data, Task

BUNDLED = default_data("speech")
FEATURE_RATE = 8000                       # every recording is resampled to this rate before its features
MAX_WORD_LABELS = 64
HYPERPARAMETERS = dict(hidden_size=128, num_layers=3, bidirectional=True, stride=3, dropout=0.2)
TRAINING = dict(lr=0.003, lr_decay=0.93, batch_size=16, epochs=40, patience=12, clip_norm=5.0, beam_size=8,
                augment=True)                     # learning rate of epoch e (from 0): lr · lr_decay^e
AUGMENT = dict(warp=(0.93, 1.07), stretch=(0.93, 1.07), band_mask=5, frame_mask=5, frame_masks=2)
"""Per training utterance and epoch: the mel axis warped by a factor (a shorter or longer vocal tract, like a new
speaker), the time axis stretched (a new speaking rate), one band of up to 5 mel channels and two runs of up to 5
frames set to the mean (SpecAugment)."""
BASELINE = dict(hidden_size=256, stride=3, context=2, lr=0.003, epochs=20)


def label_set(texts):
    """(unit, symbols): the transcripts' words when there are at most 64 distinct ones, else their characters."""
    words = sorted({w for t in texts for w in t.split()})
    if len(words) <= MAX_WORD_LABELS:
        return "word", words
    return "char", sorted({c for t in texts for c in t})


def encode(text, unit, index):
    """A transcript -> label ids (1..K; 0 is the blank); symbols outside the label set are dropped."""
    symbols = text.split() if unit == "word" else list(text)
    return [index[s] for s in symbols if s in index]


def decode(ids, unit, symbols):
    """Label ids -> text."""
    return (" " if unit == "word" else "").join(symbols[i - 1] for i in ids)


def edit_distance(reference, hypothesis):
    """Levenshtein distance between two token lists."""
    row = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hypothesis, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1]


def word_error_rate(references, hypotheses):
    """(WER = word edits / reference words, sentence accuracy = share of exact transcripts)."""
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
    words = sum(len(r.split()) for r in references)
    exact = sum(r.split() == h.split() for r, h in zip(references, hypotheses))
    return edits / max(words, 1), exact / max(len(references), 1)


def features_of(samples, rate):
    """A waveform at any rate -> normalised log-mel features (frames, F) at ``FEATURE_RATE``."""
    return utterance_features(resample(samples, rate, FEATURE_RATE) if rate != FEATURE_RATE else samples,
                              FEATURE_RATE)


def prepare(data, log=None):
    """The corpus, its splits, the label set and every utterance's features and label ids."""
    utterances = read_corpus(data or BUNDLED)
    split = {name: np.array([i for i, u in enumerate(utterances) if u.split == name], dtype=np.int64)
             for name in ("train", "valid", "test")}
    for name, indices in split.items():
        if len(indices) == 0:
            raise ValueError(f"{data or BUNDLED}: no {name} recordings; put files under train/, valid/ and test/ "
                             "(or let names be split 80/10/10 by a hash)")
    texts = [u.text for u in utterances]
    unit, symbols = label_set([texts[i] for i in split["train"]])
    index = {s: i + 1 for i, s in enumerate(symbols)}
    started = time.perf_counter()
    features = [features_of(u.samples, u.rate) for u in utterances]
    if log is not None:
        log(f"speech: {len(utterances)} recordings, features in {time.perf_counter() - started:.0f} s; "
            f"{len(symbols)} {unit} labels")
    return SimpleNamespace(utterances=utterances, texts=texts, split=split, unit=unit, symbols=symbols,
                           features=features, labels=[encode(t, unit, index) for t in texts])


def pad_features(features):
    """Feature arrays (T_b, F) -> X (T, B, F) padded with zeros, and lengths (B,)."""
    lengths = np.array([len(f) for f in features], dtype=np.int64)
    x = np.zeros((int(lengths.max()), len(features), features[0].shape[1]), dtype=np.float32)
    for b, f in enumerate(features):
        x[:len(f), b] = f
    return x, lengths


def interpolate(features, positions, axis):
    """Linear interpolation of ``features`` at fractional ``positions`` along ``axis`` (0: frames, 1: bands)."""
    low = np.clip(np.floor(positions).astype(np.int64), 0, features.shape[axis] - 1)
    high = np.minimum(low + 1, features.shape[axis] - 1)
    weight = np.clip(positions - low, 0.0, 1.0)
    if axis == 0:
        return features[low] * (1 - weight)[:, None] + features[high] * weight[:, None]
    return features[:, low] * (1 - weight) + features[:, high] * weight


def augment(features, rng):
    """One training view of an utterance's features (frames, F): warped, stretched and masked (``AUGMENT``)."""
    frames, bands = features.shape
    warped = interpolate(features, np.arange(bands) * rng.uniform(*AUGMENT["warp"]), axis=1)
    rate = rng.uniform(*AUGMENT["stretch"])
    out = interpolate(warped, np.arange(max(int(frames / rate), 1)) * rate, axis=0).astype(np.float32)
    width = int(rng.integers(AUGMENT["band_mask"] + 1))
    start = int(rng.integers(bands - width + 1))
    out[:, start:start + width] = 0.0
    for _ in range(AUGMENT["frame_masks"]):
        width = min(int(rng.integers(AUGMENT["frame_mask"] + 1)), len(out) // 10)
        start = int(rng.integers(len(out) - width + 1))
        out[start:start + width] = 0.0
    return out


def batches_of(d, indices, batch_size, stride, rng=None, augmented=False):
    """Batches: inputs (X, lengths), targets (labels (B, S), label lengths, output steps (B,)), by length buckets;
    shuffled by ``rng`` when given, and each utterance ``augment``-ed with it when ``augmented``."""
    chunks = minibatches(len(indices), batch_size) if rng is None else \
        bucketed_minibatches([len(d.features[i]) for i in indices], batch_size, rng)
    out = []
    for chunk in chunks:
        rows = indices[chunk]
        x, lengths = pad_features([augment(d.features[i], rng) if augmented else d.features[i] for i in rows])
        label_lengths = np.array([len(d.labels[i]) for i in rows], dtype=np.int64)
        labels = np.zeros((len(rows), max(int(label_lengths.max()), 1)), dtype=np.int64)
        for b, i in enumerate(rows):
            labels[b, :len(d.labels[i])] = d.labels[i]
        out.append(Batch((x, lengths), (labels, label_lengths, -(-lengths // stride))))
    return out


def ctc_objective(logits, targets, mask=None):
    """The training loss: CTC averaged over the batch (per label), utterances too short for their labels ignored."""
    labels, label_lengths, steps = targets
    return ctc_loss(logits, steps, labels, label_lengths, reduction="mean", zero_infinity=True)


def transcribe(model, features, unit, symbols, beam_size=1, batch_size=64):
    """Texts for a list of feature arrays: greedy (``beam_size`` 1) or prefix beam search."""
    model.eval()
    texts = [None] * len(features)
    order = np.argsort([len(f) for f in features], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        x, lengths = pad_features([features[i] for i in rows])
        logits = to_host(model.forward(x, lengths))
        steps = model.output_lengths(lengths)
        decoded = greedy_decode(logits, steps) if beam_size == 1 else beam_decode(logits, steps, beam_size)
        for i, ids in zip(rows, decoded):
            texts[i] = decode(ids, unit, symbols)
    return texts


def score(model, d, indices, beam_size=1):
    """(WER, sentence accuracy, hypotheses) on the utterances ``indices``."""
    hypotheses = transcribe(model, [d.features[i] for i in indices], d.unit, d.symbols, beam_size)
    return (*word_error_rate([d.texts[i] for i in indices], hypotheses), hypotheses)


def train_baseline(d, backend, seed, progress, log):
    """The per-frame baseline: the same features and CTC loss, no recurrence (each step sees +-2 stacked frames)."""
    config = {k: v for k, v in BASELINE.items() if k not in ("lr", "epochs")}
    model = FrameClassifier(NUM_MELS, len(d.symbols), **config, backend=backend, seed=seed)
    rng = np.random.default_rng([seed, 1])
    member = Member(model, Adam(BASELINE["lr"]), lambda epoch: batches_of(
        d, d.split["train"], TRAINING["batch_size"], BASELINE["stride"], rng), rngs=[rng])
    run = train_members([member], ctc_objective, lambda m: {"val_wer": score(m, d, d.split["valid"])[0]},
                        epochs=BASELINE["epochs"], meta={"task": "speech"}, data_fingerprint="", monitor="val_wer",
                        clip_norm=TRAINING["clip_norm"], progress=progress, log=log, description="speech baseline")
    return run.models[0]


class Speech(Task):
    """Many-to-many of different lengths: audio -> text through CTC."""

    name = "speech"
    summary = "speech recognition of spoken digit strings (eSpeak NG voices) with CTC -> WER on unheard voices"
    data = Data("synthetic spoken digits, 1-7 per utterance, eSpeak NG voices, 8 kHz; test voices unheard in training",
                "a folder of audio files (WAV, or any format soundfile reads) with transcripts.tsv "
                "('file<TAB>text'; train/, valid/, test/ subfolders or an 80/10/10 split by name)",
                lambda: BUNDLED, kind="folder")
    metric = "test WER"
    higher_is_better = False
    baselines = ("most frequent transcript", "per-frame classifier (no recurrence)")
    options = (CELL,)
    predict_input = "paths"

    def check_data(self, path):
        """A folder with transcripts.tsv."""
        super().check_data(path)
        if not (Path(path) / "transcripts.tsv").is_file():
            raise ValueError(f"--data {path}: no transcripts.tsv in this folder; give {self.data.accepts}")

    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, cell="rnn"):
        """Train the recogniser (best epoch by validation WER), then score it and the baselines on the test voices."""
        started, cpu_started = time.perf_counter(), time.process_time()
        d = prepare(data, log)
        epochs = TRAINING["epochs"] if epochs is None else epochs
        model = SpeechRecognizer(NUM_MELS, len(d.symbols), **HYPERPARAMETERS, cell=cell, backend=backend, seed=seed)
        rng = np.random.default_rng([seed, 0])
        optimizer = Adam(TRAINING["lr"])

        def batches(epoch):
            """The epoch's augmented batches; the learning rate decays by epoch (so a resumed run matches)."""
            optimizer.lr = TRAINING["lr"] * TRAINING["lr_decay"] ** epoch
            return batches_of(d, d.split["train"], TRAINING["batch_size"], model.stride, rng, TRAINING["augment"])
        member = Member(model, optimizer, batches, rngs=[rng])
        meta = {"task": self.name, "unit": d.unit, "symbols": d.symbols, "feature_rate": FEATURE_RATE}
        run = train_members([member], ctc_objective, lambda m: {"val_wer": score(m, d, d.split["valid"])[0]},
                            epochs=epochs, meta=meta, save=save, resume=resume, monitor="val_wer",
                            data_fingerprint=fingerprint(d.texts, [u.name for u in d.utterances], seed, cell),
                            patience=TRAINING["patience"], clip_norm=TRAINING["clip_norm"], progress=progress,
                            log=log, description="speech")
        trained, cpu_trained = time.perf_counter() - started, time.process_time() - cpu_started
        baseline = train_baseline(d, backend, seed, progress, log)
        result = self.score(run.models[0], d, run.histories, started, baseline)
        result.details["recogniser training: wall seconds, CPU seconds (all threads)"] = \
            f"{trained:.0f}, {cpu_trained:.0f}"
        if save:
            checkpoint.save(save, run.models[0], {**meta, "test_wer": result.value})
        return result

    def score(self, model, d, histories, started, baseline=None):
        """The TaskResult of ``model`` on the test voices: WER of prefix beam search, greedy beside it."""
        test = d.split["test"]
        references = [d.texts[i] for i in test]
        wer, accuracy, hypotheses = score(model, d, test, TRAINING["beam_size"])
        greedy_wer, greedy_accuracy, _ = score(model, d, test)
        common = Counter(d.texts[i] for i in d.split["train"]).most_common(1)[0][0]
        baselines = {"most frequent transcript": word_error_rate(references, [common] * len(test))[0]}
        details = {"test sentence accuracy": accuracy, "greedy WER": greedy_wer,
                   "greedy sentence accuracy": greedy_accuracy,
                   "recordings (train/valid/test)": "/".join(str(len(d.split[s])) for s in ("train", "valid", "test")),
                   "voices (train/valid/test)": "/".join(str(len({d.utterances[i].voice for i in d.split[s]}))
                                                         for s in ("train", "valid", "test")),
                   "labels": f"{len(d.symbols)} {d.unit}s + blank"}
        if baseline is not None:
            base_wer, base_accuracy, _ = score(baseline, d, test, TRAINING["beam_size"])
            baselines["per-frame classifier (no recurrence)"] = base_wer
            details["per-frame classifier sentence accuracy"] = base_accuracy
        shown = max(test[:20], key=lambda i: (len(d.texts[i].split()), -i))       # a long one of the first 20
        examples = [f"{d.utterances[i].name}: {h!r} (said {d.texts[i]!r}, voice {d.utterances[i].voice})"
                    for i, h in list(zip(test, hypotheses))[:5]]
        result = TaskResult(task=self.name, backend=model.backend.name, metric=self.metric, value=wer,
                            baselines=baselines, higher_is_better=False, histories=histories,
                            seconds=time.perf_counter() - started, details=details, examples=examples)
        result.alignment = {"model": model, "features": d.features[shown], "text": d.texts[shown], "unit": d.unit,
                            "symbols": d.symbols}                       # what ``plot`` draws
        return result

    def load(self, directory, backend=None):
        """(recogniser, meta) of a speech checkpoint, its label set checked against the model."""
        models, meta = checkpoint.load(directory, backend, task=self.name, classes=("SpeechRecognizer",))
        symbols = meta.get("symbols")
        if meta.get("unit") not in ("word", "char") or not isinstance(symbols, list) \
                or not all(isinstance(s, str) for s in symbols) or len(symbols) + 1 != models[0].output.output_size:
            raise ValueError(f"{directory}: the label set in its checkpoint.json does not fit the model")
        return models[0], meta

    def evaluate(self, directory, data=None, *, backend=None):
        """Test WER of a saved recogniser on the test part of ``data`` (labels as the checkpoint's)."""
        started = time.perf_counter()
        model, meta = self.load(directory, backend)
        d = prepare(data)
        index = {s: i + 1 for i, s in enumerate(meta["symbols"])}
        d.unit, d.symbols = meta["unit"], meta["symbols"]
        d.labels = [encode(t, d.unit, index) for t in d.texts]
        return self.score(model, d, [], started)

    def predict(self, directory, lines, *, backend=None):
        """The transcript of each audio file named in ``lines``."""
        model, meta = self.load(directory, backend)
        features = []
        for line in lines:
            samples, rate = read_audio(line.strip())
            features.append(features_of(samples, rate))
        if not features:
            return []
        return transcribe(model, features, meta["unit"], meta["symbols"], TRAINING["beam_size"])

    def plot(self, result, path):
        """A spectrogram of one test recording with the network's label posteriors over it (the CTC alignment)."""
        from ..speech.plot import plot_alignment
        shown = result.alignment
        plot_alignment(path, shown["model"], shown["features"], shown["text"], shown["unit"], shown["symbols"])


TASK = Speech()
