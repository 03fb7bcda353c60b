"""Many-to-many of different lengths: English -> Spanish with an encoder–decoder RNN on the Tatoeba pairs."""
from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import checkpoint
from ..data import PAD, UNK, Batch, Tokenizer, Vocabulary, minibatches, pad_batch
from ..datasets import default_data, read_text
from ..losses import categorical_cross_entropy
from ..models import EncoderDecoder
from ..optimizers import Adam
from ..training import Member, epoch_rng, fingerprint, train_members
from . import TaskResult
from .base import CELL, Data, Task

START, END = "<s>", "</s>"
SPLIT_SEED = 20260101          # fixed: the split never depends on --seed
SPLIT = dict(test=2000, validation=1000)
EXAMPLES = ["Do you have a pet?", "I like red apples.", "Where is the station?", "Tom is very tired."]
HYPERPARAMETERS = dict(embed_dim=128, hidden_size=256)
TRAINING = dict(lr=0.002, batch_size=64, epochs=8, clip_norm=5.0, source_min_count=2, target_max_words=4000,
                reverse_source=True)
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


def split(n):
    """Deterministic train/validation/test index arrays (a fixed permutation; the test set is 2000 pairs or 10 %)."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test, n_val = min(SPLIT["test"], n // 10), min(SPLIT["validation"], n // 10)
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


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


def batches_of(source_ids, target_ids, indices, batch_size, end_id, start_id, rng=None):
    """Batches: inputs (source (S, B), lengths, decoder input <s> y (T, B), lengths), targets y </s> (T, B), mask."""
    out = []
    for chunk in minibatches(len(indices), batch_size, rng):
        rows = indices[chunk]
        source, source_lengths = pad_batch([source_ids[i] for i in rows])
        target_in, target_lengths = pad_batch([[start_id] + target_ids[i] for i in rows])
        target_out, _ = pad_batch([target_ids[i] + [end_id] for i in rows])
        mask = np.arange(target_out.shape[0])[:, None] < target_lengths[None, :]          # (T, B)
        out.append(Batch((source, source_lengths, target_in, target_lengths), target_out, mask))
    return out


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


def prepare(data, vocabularies=None):
    """Pairs, the fixed split, the vocabularies (built on the training part unless given) and every pair's ids."""
    pairs = read_pairs(data)
    tokenizer = Tokenizer("word")
    english = [tokenizer(e) for e, _ in pairs]
    spanish = [tokenizer(s) for _, s in pairs]
    train_idx, val_idx, test_idx = split(len(pairs))
    if vocabularies is None:
        vocabularies = (Vocabulary.build([english[i] for i in train_idx], min_count=TRAINING["source_min_count"]),
                        target_vocabulary([spanish[i] for i in train_idx], TRAINING["target_max_words"]))
    source_vocabulary, target_vocab = vocabularies
    reverse = TRAINING["reverse_source"]
    return SimpleNamespace(pairs=pairs, tokenizer=tokenizer, train=train_idx, val=val_idx, test=test_idx,
                           source_vocabulary=source_vocabulary, target_vocabulary=target_vocab, reverse=reverse,
                           source_ids=[encode_source(source_vocabulary, t, reverse) for t in english],
                           target_ids=[target_vocab.encode(t) for t in spanish])


class Translation(Task):
    """Many-to-many of different lengths: English sentences -> Spanish sentences."""

    name = "translation"
    summary = "English -> Spanish encoder-decoder (Tatoeba) -> corpus BLEU, greedy and beam search"
    data = Data("Tatoeba English-Spanish, the first 40,000 pairs", "an 'English<TAB>Spanish' file (plain, .gz or .xz)",
                lambda: default_data("translation"))
    metric = f"test BLEU (beam {DECODING['beam_size']})"
    higher_is_better = True
    baselines = ("copy the source",)
    options = (CELL,)

    def train(self, data=None, *, backend=None, epochs=None, seed=0, save=None, resume=False, progress=True,
              log=None, cell="rnn"):
        """Train with teacher forcing; report test BLEU of greedy and beam-search decoding against copying."""
        started = time.perf_counter()
        d = prepare(data)
        start_id, end_id = d.target_vocabulary.index[START], d.target_vocabulary.index[END]
        model = EncoderDecoder(len(d.source_vocabulary), len(d.target_vocabulary), **HYPERPARAMETERS, cell=cell,
                               backend=backend, seed=seed)

        def validate(m):
            """Validation cross-entropy per target token (teacher forcing)."""
            total, count = 0.0, 0
            for batch in batches_of(d.source_ids, d.target_ids, d.val, 500, end_id, start_id):
                loss, _ = categorical_cross_entropy(m.forward(*batch.inputs), batch.targets, batch.mask)
                total += loss * batch.mask.sum()
                count += batch.mask.sum()
            return {"val_loss": float(total / count)}

        epochs = TRAINING["epochs"] if epochs is None else epochs
        meta = {"task": self.name, "tokenizer": d.tokenizer.config(), "source_vocabulary": d.source_vocabulary.tokens,
                "target_vocabulary": d.target_vocabulary.tokens, "reverse_source": d.reverse}
        batches = lambda epoch: batches_of(d.source_ids, d.target_ids, d.train, TRAINING["batch_size"],  # noqa: E731
                                           end_id, start_id, epoch_rng(seed, epoch))
        run = train_members([Member(model, Adam(TRAINING["lr"]), batches)], categorical_cross_entropy, validate,
                            epochs=epochs, meta=meta, save=save, resume=resume,
                            data_fingerprint=fingerprint([d.pairs[i] for i in d.train], meta["source_vocabulary"],
                                                         meta["target_vocabulary"], seed, cell),
                            clip_norm=TRAINING["clip_norm"], progress=progress, log=log, description="translation")
        best = run.bests[0]
        result = self.score(model, d, run.histories, started)
        result.details["best_epoch"] = best["epoch"] if best else None
        if save:
            checkpoint.save(save, model, {**meta, "epoch": result.details["best_epoch"],
                                          "test_bleu": {"greedy": result.details["bleu_greedy"],
                                                        "beam": result.details["bleu_beam"]}})
        return result

    def score(self, model, d, histories, started):
        """Test BLEU of greedy and beam-search decoding against copying the source."""
        references = [d.pairs[i][1] for i in d.test]
        test_sources = [d.source_ids[i] for i in d.test]
        greedy, _ = translate_ids(model, test_sources, d.target_vocabulary, beam_size=1)
        beam, _ = translate_ids(model, test_sources, d.target_vocabulary, beam_size=DECODING["beam_size"])
        scores = {"greedy": bleu(greedy, references), "beam": bleu(beam, references)}
        copy_baseline = bleu([d.pairs[i][0] for i in d.test], references)
        examples = translate_lines(model, d.tokenizer, d.source_vocabulary, d.target_vocabulary, d.reverse, EXAMPLES,
                                   DECODING["beam_size"])
        return TaskResult(task=self.name, backend=model.backend.name, metric=self.metric, value=scores["beam"],
                          baselines={"copy the source": copy_baseline}, higher_is_better=True, histories=histories,
                          seconds=time.perf_counter() - started,
                          details={"bleu_greedy": scores["greedy"], "bleu_beam": scores["beam"],
                                   "train_pairs": len(d.train), "validation_pairs": len(d.val),
                                   "test_pairs": len(d.test), "source_vocabulary": len(d.source_vocabulary),
                                   "target_vocabulary": len(d.target_vocabulary), "reverse_source": d.reverse},
                          examples=[f"{e} -> {s}" for e, s in zip(EXAMPLES, examples)])

    def evaluate(self, directory, data=None, *, backend=None):
        """Test BLEU of a saved translator on the split of ``data`` (encoded with the checkpoint's vocabularies)."""
        started = time.perf_counter()
        models, meta = load_translator(directory, backend)
        d = prepare(data, (Vocabulary(meta["source_vocabulary"]), Vocabulary(meta["target_vocabulary"])))
        return self.score(models[0], d, [], started)

    def predict(self, directory, lines, *, backend=None):
        """``predict`` on a translation checkpoint translates, as ``translate`` does."""
        return translate(directory, lines, backend=backend)


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
    models, meta = checkpoint.load(directory, backend, task="translation", classes=("EncoderDecoder",))
    return models, meta


def translate(directory, lines, beam_size=DECODING["beam_size"], backend=None):
    """Spanish lines for English lines, from a saved translation checkpoint."""
    models, meta = load_translator(directory, backend)
    return translate_lines(models[0], Tokenizer(**meta["tokenizer"]), Vocabulary(meta["source_vocabulary"]),
                           Vocabulary(meta["target_vocabulary"]), meta["reverse_source"], lines, beam_size)


TASK = Translation()
