"""Many-to-many of different lengths: English -> Spanish with an encoder–decoder RNN on the Tatoeba pairs.

By default the decoder attends over a bidirectional encoder's states (``rnnbackends.attention``); with
``--attention none`` it is the lecture's encoder–decoder, whose encoder hands over its last state alone.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import checkpoint
from ..attention import AttentionTranslator
from ..data import PAD, UNK, Batch, Tokenizer, Vocabulary, bucketed_minibatches, minibatches, pad_batch
from ..datasets import default_data, read_text
from ..layers import to_host
from ..losses import categorical_cross_entropy
from ..models import EncoderDecoder
from ..optimizers import Adam
from ..training import Member, epoch_rng, fingerprint, train_members
from . import TaskResult
from .base import CELL, Data, Option, Task

START, END = "<s>", "</s>"
SPLIT_SEED = 20260101          # fixed: the split never depends on --seed
SPLIT = dict(test=2000, validation=1000)
EXAMPLES = ["Do you have a pet?", "I like red apples.", "Where is the station?", "Tom is very tired."]
HYPERPARAMETERS = {"none": dict(embed_dim=128, hidden_size=256),                  # the lecture's encoder-decoder
                   "luong": dict(embed_dim=128, hidden_size=256, dropout=0.2)}    # with attention
TRAINING = {"none": dict(lr=0.002, batch_size=64, epochs=8, clip_norm=5.0, reverse_source=True),
            "luong": dict(lr=0.002, batch_size=64, epochs=8, clip_norm=5.0, reverse_source=False)}
VOCABULARY = dict(source_min_count=2, target_max_words=4000)
GRU_CELL = Option(CELL.name, CELL.help + " (translation: gru by default; gru and lstm are far better than rnn here)",
                  "gru", CELL.choices)
ATTENTION = Option("attention", "translation: 'luong' attends over a bidirectional encoder's states; 'none' is the "
                   "lecture's encoder-decoder (the last state alone)", "luong", ("luong", "none"))
DECODING = dict(beam_size=5, alpha=1.0, max_steps=20)


def read_pairs(data):
    """(English, Spanish) sentence pairs from an ``English<TAB>Spanish`` file (further columns ignored)."""
    path = Path(data) if data else default_data("translation")
    pairs = []
    for number, line in enumerate(read_text(path).removesuffix("\n").split("\n"), 1):
        columns = line.rstrip("\r").split("\t")
        if len(columns) < 2 or not columns[0].strip() or not columns[1].strip():
            raise ValueError(f"{path}:{number}: expected 'English<TAB>Spanish', got {line[:60]!r}")
        pairs.append((columns[0].strip(), columns[1].strip()))
    if len(pairs) < 100:
        raise ValueError(f"{path}: only {len(pairs)} pairs; need at least 100")
    return pairs


def normalise(sentence):
    """The form near-duplicates share: lower case, punctuation dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", sentence.lower()).split())


def deduplicate(pairs):
    """The pairs without repeats of a pair already seen in normalised form (the first one stays, order kept)."""
    seen, kept = set(), []
    for english, spanish in pairs:
        key = (normalise(english), normalise(spanish))
        if key not in seen:
            seen.add(key)
            kept.append((english, spanish))
    return kept


def split(pairs):
    """Deterministic train/validation/test index arrays over the pairs, grouped by normalised English sentence.

    All translations of one English sentence land in the same part, so no test source was seen in training. The
    groups are taken in a fixed random order until the test part holds 2000 pairs (or 10 %), then validation
    1000 (or 10 %); the rest is training.
    """
    keys = [normalise(english) for english, _ in pairs]
    groups = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    ordered = [groups[key] for key in sorted(groups)]
    order = np.concatenate([ordered[g] for g in np.random.default_rng(SPLIT_SEED).permutation(len(ordered))])
    group_of = np.array([keys[i] for i in order])
    n = len(pairs)
    n_test, n_val = min(SPLIT["test"], n // 10), min(SPLIT["validation"], n // 10)
    test_end = group_end(group_of, n_test)
    val_end = group_end(group_of, test_end + n_val)
    return order[val_end:], order[test_end:val_end], order[:test_end]


def group_end(group_of, position):
    """The first index at or after ``position`` where a new group starts in ``group_of`` (its length at the end)."""
    while 0 < position < len(group_of) and group_of[position] == group_of[position - 1]:
        position += 1
    return position


def target_vocabulary(token_lists, max_words):
    """``<pad> <unk> <s> </s>`` and the ``max_words`` most frequent target words."""
    ranked = Vocabulary.build(token_lists, max_size=max_words).tokens[2:]
    return Vocabulary([PAD, UNK, START, END] + ranked)


def encode_source(vocabulary, tokens, reverse):
    """English tokens -> ids, reversed when ``reverse`` (Sutskever et al. 2014)."""
    ids = vocabulary.encode(tokens)
    return ids[::-1] if reverse else ids


def detokenize(tokens):
    """Spanish tokens -> text: no space before closing punctuation nor after ¿ and ¡."""
    return re.sub(r"([¿¡]) ", r"\1", re.sub(r" ([.,!?;:%)])", r"\1", " ".join(tokens)))


def batches_of(source_ids, target_ids, indices, batch_size, end_id, start_id, rng=None, valid_rows=False):
    """Batches: inputs (source (S, B), lengths, decoder input <s> y (T, B), lengths), targets y </s> (T, B), mask.

    With ``rng``, shuffled batches of sentences of similar length (less padding); in order otherwise. With
    ``valid_rows`` the inputs end with the valid target positions' indices ``np.flatnonzero(mask)`` (N,), for a
    model that scores those rows alone (``valid_rows_cross_entropy``)."""
    out = []
    chunks = minibatches(len(indices), batch_size) if rng is None else \
        bucketed_minibatches([len(source_ids[i]) + len(target_ids[i]) for i in indices], batch_size, rng)
    for chunk in chunks:
        rows = indices[chunk]
        source, source_lengths = pad_batch([source_ids[i] for i in rows])
        target_in, target_lengths = pad_batch([[start_id] + target_ids[i] for i in rows])
        target_out, _ = pad_batch([target_ids[i] + [end_id] for i in rows])
        mask = np.arange(target_out.shape[0])[:, None] < target_lengths[None, :]          # (T, B)
        inputs = (source, source_lengths, target_in, target_lengths) + ((np.flatnonzero(mask),) if valid_rows else ())
        out.append(Batch(inputs, target_out, mask))
    return out


def valid_rows_cross_entropy(logits, targets, mask):
    """The masked mean cross-entropy from logits (N, V) of the N valid positions alone: targets (T, B), mask (T, B)
    -> (loss, dL/dlogits (N, V)), equal to ``categorical_cross_entropy`` over (T, B, V) with the mask."""
    return categorical_cross_entropy(logits, np.asarray(targets)[np.asarray(mask)])


def translate_ids(model, source_ids, target_vocabulary, beam_size=1, batch_size=500):
    """Spanish sentences (text) and normalised log-probabilities for encoded English sources."""
    sentences, scores = [], []
    for chunk in minibatches(len(source_ids), batch_size):
        source, lengths = pad_batch([source_ids[i] for i in chunk])
        ids, chunk_scores = model.translate(source, lengths, target_vocabulary.index[START],
                                            target_vocabulary.index[END], DECODING["max_steps"], beam_size,
                                            DECODING["alpha"])
        sentences += [detokenize(target_vocabulary.decode(i)) for i in ids]
        scores += list(chunk_scores)
    return sentences, np.array(scores)


def bleu(hypotheses, references):
    """Case-insensitive corpus BLEU (sacrebleu, 13a tokens) of detokenised hypotheses against one reference each."""
    import sacrebleu
    return float(sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score)


def chrf(hypotheses, references):
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2) against one reference each, lower-cased."""
    import sacrebleu
    return float(sacrebleu.corpus_chrf([h.lower() for h in hypotheses], [[r.lower() for r in references]]).score)


def prepare(data, vocabularies=None, reverse=False):
    """Deduplicated pairs, the fixed split, the vocabularies (built on the training part unless given) and every
    pair's ids (the English reversed when ``reverse``)."""
    read = read_pairs(data)
    pairs = deduplicate(read)
    tokenizer = Tokenizer("word")
    english = [tokenizer(e) for e, _ in pairs]
    spanish = [tokenizer(s) for _, s in pairs]
    train_idx, val_idx, test_idx = split(pairs)
    if vocabularies is None:
        vocabularies = (Vocabulary.build([english[i] for i in train_idx], min_count=VOCABULARY["source_min_count"]),
                        target_vocabulary([spanish[i] for i in train_idx], VOCABULARY["target_max_words"]))
    source_vocabulary, target_vocab = vocabularies
    return SimpleNamespace(pairs=pairs, duplicates=len(read) - len(pairs), tokenizer=tokenizer, train=train_idx,
                           val=val_idx, test=test_idx,
                           source_vocabulary=source_vocabulary, target_vocabulary=target_vocab, reverse=reverse,
                           source_ids=[encode_source(source_vocabulary, t, reverse) for t in english],
                           target_ids=[target_vocab.encode(t) for t in spanish])


class Translation(Task):
    """Many-to-many of different lengths: English sentences -> Spanish sentences."""

    name = "translation"
    summary = "English -> Spanish encoder-decoder with attention (Tatoeba) -> corpus BLEU and chrF, beam search"
    data = Data("Tatoeba English-Spanish, the first 40,000 pairs", "an 'English<TAB>Spanish' file (plain, .gz or .xz)",
                lambda: default_data("translation"))
    metric = f"test BLEU (beam {DECODING['beam_size']})"
    higher_is_better = True
    baselines = ("copy the source",)
    options = (GRU_CELL, ATTENTION)

    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, cell="gru", attention="luong"):
        """Train with teacher forcing; report test BLEU and chrF of greedy and beam-search decoding against copying."""
        started, cpu_started = time.perf_counter(), time.process_time()
        training = TRAINING[attention]
        d = prepare(data, reverse=training["reverse_source"])
        if log:
            log(f"translation: {len(d.pairs)} pairs after removing {d.duplicates} near-duplicates; "
                f"split {len(d.train)} train / {len(d.val)} validation / {len(d.test)} test")
        start_id, end_id = d.target_vocabulary.index[START], d.target_vocabulary.index[END]
        model_class = AttentionTranslator if attention == "luong" else EncoderDecoder
        model = model_class(len(d.source_vocabulary), len(d.target_vocabulary), **HYPERPARAMETERS[attention],
                            cell=cell, backend=backend, seed=seed)

        valid_rows = attention != "none"           # the attention model scores the valid target positions alone
        loss_fn = valid_rows_cross_entropy if valid_rows else categorical_cross_entropy

        def validate(m):
            """Validation cross-entropy per target token (teacher forcing)."""
            total, count = 0.0, 0
            for batch in batches_of(d.source_ids, d.target_ids, d.val, 500, end_id, start_id,
                                    valid_rows=valid_rows):
                loss, _ = loss_fn(m.forward(*batch.inputs), batch.targets, batch.mask)
                total += loss * batch.mask.sum()
                count += batch.mask.sum()
            return {"val_loss": float(total / count)}

        epochs = training["epochs"] if epochs is None else epochs
        meta = {"task": self.name, "tokenizer": d.tokenizer.config(), "source_vocabulary": d.source_vocabulary.tokens,
                "target_vocabulary": d.target_vocabulary.tokens, "reverse_source": d.reverse}
        batches = lambda epoch: batches_of(d.source_ids, d.target_ids, d.train, training["batch_size"],  # noqa: E731
                                           end_id, start_id, epoch_rng(seed, epoch), valid_rows)
        run = train_members([Member(model, Adam(training["lr"]), batches)], loss_fn, validate,
                            epochs=epochs, meta=meta, save=save, resume=resume,
                            data_fingerprint=fingerprint([d.pairs[i] for i in d.train], meta["source_vocabulary"],
                                                         meta["target_vocabulary"], seed, cell, attention),
                            clip_norm=training["clip_norm"], progress=progress, log=log, description="translation")
        best = run.bests[0]
        training_seconds = {"training_wall_seconds": time.perf_counter() - started,
                            "training_cpu_seconds": time.process_time() - cpu_started}
        result = self.score(model, d, run.histories, started)
        result.details.update(best_epoch=best["epoch"] if best else None, epochs_trained=len(run.histories[0]),
                              cell=cell, attention=attention, **training_seconds)
        if log:
            log(f"translation: trained in {training_seconds['training_wall_seconds']:.0f} s wall, "
                f"{training_seconds['training_cpu_seconds']:.0f} s CPU; test BLEU {result.value:.2f}, "
                f"chrF {result.details['chrf_beam']:.2f} on {len(d.test)} held-out pairs")
        if save:
            checkpoint.save(save, model, {**meta, "epoch": result.details["best_epoch"],
                                          "test_bleu": {"greedy": result.details["bleu_greedy"],
                                                        "beam": result.details["bleu_beam"]},
                                          "test_chrf": result.details["chrf_beam"]})
        return result

    def score(self, model, d, histories, started):
        """Test BLEU and chrF of greedy and beam-search decoding against copying the source; the examples."""
        references = [d.pairs[i][1] for i in d.test]
        test_sources = [d.source_ids[i] for i in d.test]
        greedy, _ = translate_ids(model, test_sources, d.target_vocabulary, beam_size=1)
        beam, _ = translate_ids(model, test_sources, d.target_vocabulary, beam_size=DECODING["beam_size"])
        copies = [d.pairs[i][0] for i in d.test]
        examples = translate_lines(model, d.tokenizer, d.source_vocabulary, d.target_vocabulary, d.reverse, EXAMPLES,
                                   DECODING["beam_size"])
        shown = [(d.pairs[i][0], beam[n], d.pairs[i][1]) for n, i in enumerate(d.test[:8])]
        plot_series, attention = {}, {}
        if isinstance(model, AttentionTranslator):
            plot_series = attention_map(model, d, EXAMPLES[0])
            attention = {"attention_statistics": attention_statistics(model, d, d.test)}
        return TaskResult(task=self.name, backend=model.backend.name, metric=self.metric,
                          value=bleu(beam, references), baselines={"copy the source": bleu(copies, references)},
                          higher_is_better=True, histories=histories, seconds=time.perf_counter() - started,
                          details={"bleu_greedy": bleu(greedy, references), "bleu_beam": bleu(beam, references),
                                   "chrf_greedy": chrf(greedy, references), "chrf_beam": chrf(beam, references),
                                   "chrf_copy": chrf(copies, references), "pairs_read": len(d.pairs) + d.duplicates,
                                   "duplicates_removed": d.duplicates, "train_pairs": len(d.train),
                                   "validation_pairs": len(d.val), "test_pairs": len(d.test),
                                   "source_vocabulary": len(d.source_vocabulary),
                                   "target_vocabulary": len(d.target_vocabulary), "reverse_source": d.reverse,
                                   **attention},
                          examples=[f"{e} -> {s}" for e, s in zip(EXAMPLES, examples)]
                          + [f"{e} -> {s} (reference: {r})" for e, s, r in shown],
                          plot_series=plot_series)

    def evaluate(self, directory, data=None, *, backend=None):
        """Test BLEU of a saved translator on the split of ``data`` (encoded with the checkpoint's vocabularies)."""
        started = time.perf_counter()
        models, meta = load_translator(directory, backend)
        d = prepare(data, (Vocabulary(meta["source_vocabulary"]), Vocabulary(meta["target_vocabulary"])),
                    meta["reverse_source"])
        return self.score(models[0], d, [], started)

    def predict(self, directory, lines, *, backend=None):
        """``predict`` on a translation checkpoint translates, as ``translate`` does."""
        return translate(directory, lines, backend=backend)

    def plot(self, result, path):
        """Save a PNG: loss curves and, for an attention model, the attention weights of an example sentence."""
        plot_translation(result, path)


def attention_map(model, d, english):
    """What the attention plot shows: the source words, the beam-search output and α (T, S) while the model reads
    its own output."""
    source_tokens = d.tokenizer(english)
    source = encode_source(d.source_vocabulary, source_tokens, d.reverse)
    start, end = d.target_vocabulary.index[START], d.target_vocabulary.index[END]
    ids, _ = model.translate(np.array(source)[:, None], np.array([len(source)]), start, end, DECODING["max_steps"],
                             DECODING["beam_size"], DECODING["alpha"])
    weights = model.attention_weights(source, [start] + ids[0])
    return {"source": source_tokens, "target": d.target_vocabulary.decode(ids[0]) + [END], "weights": weights.tolist()}


def attention_statistics(model, d, indices, batch_size=500):
    """How the attention spreads over the source under teacher forcing on the pairs ``indices`` (reference
    translations): the means over every target step of α's entropy (nats), its weight on the last source word, and
    its weight within one word of the diagonal s = t·(S-1)/(T-1); beside each, its value for uniform weights."""
    sums = dict(entropy=0.0, uniform_entropy=0.0, last_source_mass=0.0, uniform_last_source_mass=0.0,
                diagonal_mass=0.0, uniform_diagonal_mass=0.0)
    count = 0
    start_id, end_id = d.target_vocabulary.index[START], d.target_vocabulary.index[END]
    model.eval()
    for batch in batches_of(d.source_ids, d.target_ids, indices, batch_size, end_id, start_id):
        source, source_lengths, target_in, target_lengths = batch.inputs
        model.forward(source, source_lengths, target_in, target_lengths)
        weights = to_host(model.attention.weights).astype(np.float64)                   # α (T, B, S)
        for b, (S, T) in enumerate(zip(source_lengths, target_lengths)):
            alpha = weights[:T, b, :S]                                                  # (T, S)
            steps = np.arange(S)
            diagonal = np.abs(steps[None, :] - (np.arange(T) * (S - 1) / max(T - 1, 1))[:, None]) <= 1.0   # (T, S)
            sums["entropy"] += float(-(alpha * np.log(np.maximum(alpha, 1e-30))).sum())
            sums["uniform_entropy"] += T * np.log(S)
            sums["last_source_mass"] += float(alpha[:, S - 1].sum())
            sums["uniform_last_source_mass"] += T / S
            sums["diagonal_mass"] += float((alpha * diagonal).sum())
            sums["uniform_diagonal_mass"] += float(diagonal.sum() / S)
            count += int(T)
    return {"pairs": len(indices), "target_steps": count, **{k: v / count for k, v in sums.items()}}


def plot_translation(result, path):
    """Loss curves beside the attention heatmap of ``result.plot_series`` (loss curves alone without one)."""
    from ..plotting import plot_result
    if not result.plot_series:
        plot_result(result, path)
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.plot_series
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(13, 5))
    for history in (h for h in result.histories if h):
        epochs = [r["epoch"] for r in history]
        ax_loss.plot(epochs, [r["loss"] for r in history], label="train")
        ax_loss.plot(epochs, [r["val_loss"] for r in history], linestyle="--", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy per target word")
    ax_loss.set_title(f"translation ({result.details.get('cell')}): BLEU {result.value:.1f}, "
                      f"chrF {result.details.get('chrf_beam', float('nan')):.1f}")
    ax_loss.legend(fontsize=8)
    image = ax_map.imshow(np.array(series["weights"]), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax_map.set_xticks(range(len(series["source"])), series["source"], rotation=45, ha="right")
    ax_map.set_yticks(range(len(series["target"])), series["target"])
    ax_map.set_xlabel("English (source)")
    ax_map.set_ylabel("Spanish (the model's output)")
    ax_map.set_title("attention weights α")
    fig.colorbar(image, ax=ax_map)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def translate_lines(model, tokenizer, source_vocabulary, target_vocab, reverse, lines, beam_size):
    """Spanish for each English line (an empty line stays empty)."""
    tokens = [tokenizer(line) for line in lines]
    present = [i for i, t in enumerate(tokens) if t]
    sentences, _ = translate_ids(model, [encode_source(source_vocabulary, tokens[i], reverse) for i in present],
                                 target_vocab, beam_size)
    out = [""] * len(lines)
    for i, sentence in zip(present, sentences):
        out[i] = sentence
    return out


def load_translator(directory, backend=None):
    """(models, meta) of a translation checkpoint; a ValueError for another task's."""
    models, meta = checkpoint.load(directory, backend, task="translation",
                                   classes=("AttentionTranslator", "EncoderDecoder"))
    return models, meta


def translate(directory, lines, beam_size=DECODING["beam_size"], backend=None):
    """Spanish lines for English lines, from a saved translation checkpoint."""
    models, meta = load_translator(directory, backend)
    return translate_lines(models[0], Tokenizer(**meta["tokenizer"]), Vocabulary(meta["source_vocabulary"]),
                           Vocabulary(meta["target_vocabulary"]), meta["reverse_source"], lines, beam_size)


TASK = Translation()
