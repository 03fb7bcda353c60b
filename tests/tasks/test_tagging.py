"""Part-of-speech tagging on the real UD English-EWT files: parsing, features, gradients, training, resuming, CLI."""
import re
import subprocess
import sys

import numpy as np
import pytest

import rnnbackends
from rnnbackends import checkpoint
from rnnbackends.char_tagger import CharTagger
from rnnbackends.data import Vocabulary
from rnnbackends.datasets import default_data, read_text
from rnnbackends.gradcheck import check_gradients
from rnnbackends.layers import Dropout, to_host
from rnnbackends.tasks import tagging

POS = default_data("tagging")
pytestmark = pytest.mark.skipif(not POS.is_dir(), reason=f"no UD English-EWT data at {POS}")
CPU_BACKENDS = [b.name for b in rnnbackends.list_backends() if b.status == "available" and b.name in ("numpy", "numba")]


def word_lines(path):
    """The token lines of a CoNLL-U file whose ID is a plain integer, read without the conllu package."""
    lines = read_text(path).split("\n")
    return [line.split("\t") for line in lines if line[:1].isdigit() and line.split("\t")[0].isdigit()]


@pytest.mark.parametrize("part", ["train", "dev", "test"])
def test_read_conllu_keeps_words_and_skips_multiword_and_empty_nodes(part):
    path = sorted(POS.glob(f"*{part}*.conllu*"))[0]
    sentences = tagging.read_conllu(path)
    lines = word_lines(path)
    words = [w for ws, _ in sentences for w in ws]
    tags = [t for _, ts in sentences for t in ts]
    assert words == [line[1] for line in lines]
    assert tags == [line[3] for line in lines]
    text = read_text(path)
    ranges = [line.split("\t")[1] for line in text.split("\n") if re.match(r"\d+-\d+\t", line)]
    assert ranges and not set(ranges) <= set(words)          # e.g. "don't" is a range; its words are "do", "n't"
    assert len(sentences) == text.count("\n\n") + (not text.endswith("\n\n"))


def test_read_conllu_rejects_a_file_that_is_not_conllu(tmp_path):
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tHello\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.conllu"):
        tagging.read_conllu(bad)


def test_features_describe_unknown_words():
    assert tagging.shape("Zurich") == "Xx" and tagging.shape("1984") == "d" and tagging.shape("e-mail") == "x-x"
    assert tagging.features("Walked") == ["w:walked", "s1:d", "s2:ed", "s3:ked", "shape:Xx"]


def test_spell_gives_each_distinct_word_of_a_batch_once():
    characters = Vocabulary.build([list("the cat sat on a mat")])
    long_word = "https://example.org/a-very-long-address"
    chars, char_lengths, word_index = tagging.spell([["the", "cat", "sat"], ["the", long_word]], characters)
    assert word_index.shape == (3, 2)                                             # (T, B)
    assert word_index[:, 0].tolist() == [0, 1, 2] and word_index[:2, 1].tolist() == [0, 3]
    assert char_lengths.tolist() == [3, 3, 3, tagging.MAX_WORD_CHARS]             # long words: first and last 10
    assert chars.shape == (tagging.MAX_WORD_CHARS, 4)                             # (C, U)
    assert characters.decode(chars[:3, 1].tolist()) == list("cat")
    assert chars[:, 3].tolist() == characters.encode(list(long_word[:10] + long_word[-10:]))
    assert characters.unk_id in chars[:, 3]                                       # "p", ":", "/"... never seen
    assert chars[3:, 0].tolist() == [characters.pad_id] * (tagging.MAX_WORD_CHARS - 3)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_char_tagger_gradients(backend_name, cell):
    model = CharTagger(13, 3, 9, 4, embed_dim=2, char_embed_dim=3, char_hidden_size=2, hidden_size=3, num_layers=2,
                       dropout=0.3, embed_dropout=0.2, cell=cell, backend=backend_name, dtype="float64")
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 13, (5, 2, 3))                                         # (T, B, F), no padding id
    lengths = np.array([5, 3])
    chars = np.array([[2, 3, 4], [5, 6, 0], [7, 0, 0], [8, 0, 0]])                # (C, U): U = 3 words
    char_lengths = np.array([4, 2, 1])
    word_index = np.array([[0, 1], [1, 2], [2, 0], [0, 0], [1, 0]])               # (T, B): words repeat
    weights = rng.normal(size=(5, 2, 4)) * (np.arange(5)[:, None] < lengths)[:, :, None]   # padding steps count 0

    def loss():
        for layer in model.layers.values():                                     # the same dropout masks every call
            for dropout in [layer] * isinstance(layer, Dropout) + list(getattr(layer, "dropouts", [])):
                dropout.rng = np.random.default_rng(4)
        logits = model.forward(ids, lengths, chars, char_lengths, word_index)
        assert logits.shape == (5, 2, 4)
        return float((to_host(logits) * weights).sum())

    loss()
    model.backward(model.xp.asarray(weights))
    assert float(np.abs(to_host(model.grads["char_embedding.weight"])[2:9]).sum()) > 0   # spellings learn
    check_gradients(loss, model.params, model.grads, max_checks=12)


def test_one_training_file_is_tested_on_the_bundled_dev_and_test(tmp_path):
    train = tmp_path / "my-corpus.conllu"
    train.write_text(read_text(sorted(POS.glob("*train*.conllu*"))[0]).split("\n\n", 1)[0] + "\n\n", encoding="utf-8")
    files = tagging.conllu_files(train)
    assert files[0] == train
    assert [f.name for f in files[1:]] == [f.name for f in tagging.conllu_files(None)[1:]]
    assert "dev" in files[1].name and "test" in files[2].name


def test_word_dropout_reads_rare_words_as_unknown_and_keeps_frequent_ones():
    d = tagging.prepare(None)
    word_ids = np.concatenate(d.encoded["train"])[:, 0]
    counts = np.bincount(word_ids, minlength=len(d.vocabulary))
    p = tagging.rare_word_dropout(d, 0.25)                                      # (V,)
    the, once = d.vocabulary.index["w:the"], int(np.flatnonzero(counts == 1)[0])
    assert p[d.vocabulary.pad_id] == p[d.vocabulary.unk_id] == 0.0
    assert p[once] == pytest.approx(0.2) and p[the] == pytest.approx(0.25 / (0.25 + counts[the])) and p[the] < 0.001
    rng = np.random.default_rng(0)
    read = lambda batches: np.concatenate([b.inputs[0].reshape(-1, 5) for b in batches])     # noqa: E731
    before = read(tagging.batches_of(d, "train", 64, np.random.default_rng(0)))                # (tokens, F)
    after = read(tagging.batches_of(d, "train", 64, rng, word_dropout=p))                     # same order
    np.testing.assert_array_equal(before[:, 1:], after[:, 1:])                  # suffixes and shape stay
    changed = before[:, 0] != after[:, 0]
    assert (after[changed, 0] == d.vocabulary.unk_id).all()
    singletons = counts[before[:, 0]] == 1
    assert 0.17 < changed[singletons].mean() < 0.23                             # alpha / (alpha + 1) = 0.2
    assert changed[before[:, 0] == the].mean() < 0.002


def test_cli_refuses_textgen_options_for_tagging():
    done = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "train", "tagging", "--layers", "2"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "does not take --layers" in done.stderr and "Traceback" not in done.stderr


def small_pos_folder(folder, sentences=300):
    """The first ``sentences`` sentences of each real EWT file, in a folder the task reads."""
    for part in ("train", "dev", "test"):
        text = read_text(sorted(POS.glob(f"*{part}*.conllu*"))[0])
        (folder / f"small-{part}.conllu").write_text("\n\n".join(text.split("\n\n")[:sentences]) + "\n\n",
                                                     encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tagging")
    return tagging.TASK.train(epochs=1, backend="numpy", save=directory, progress=False), directory


@pytest.mark.slow
def test_one_epoch_beats_the_most_frequent_tag_baseline(trained):
    result, _ = trained
    assert result.value > result.baseline + 0.01
    assert result.details["oov_accuracy"] > result.details["baseline_oov_accuracy"] + 0.1
    assert 0.05 < result.details["oov_rate"] < 0.3
    assert result.details["test_words"] == 25094


@pytest.mark.slow
def test_predict_prints_word_slash_tag(trained):
    _, directory = trained
    out = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "predict", "--checkpoint", str(directory)],
                         input="I like red apples\n", capture_output=True, text=True, check=True).stdout
    tokens = out.split()
    assert [t.split("/")[0] for t in tokens] == ["I", "like", "red", "apples"]
    assert all(t.split("/")[1] in tagging.UPOS for t in tokens)


@pytest.mark.slow
def test_resume_after_an_interrupt_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    data = small_pos_folder(tmp_path)
    whole = tagging.TASK.train(data, backend="numpy", epochs=3, seed=5, save=tmp_path / "whole", progress=False)
    epoch_rng = tagging.epoch_rng

    def interrupt_in_the_third_epoch(seed, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return epoch_rng(seed, epoch)

    monkeypatch.setattr(tagging, "epoch_rng", interrupt_in_the_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        tagging.TASK.train(data, backend="numpy", epochs=3, seed=5, save=tmp_path / "cut", progress=False)
    assert checkpoint.read(tmp_path / "cut" / "last")[0]["meta"]["training"]["epoch"] == 2
    monkeypatch.setattr(tagging, "epoch_rng", epoch_rng)
    resumed = tagging.TASK.train(data, backend="numpy", epochs=3, seed=5, save=tmp_path / "cut", progress=False,
                            resume=True)
    for key in ("loss", "val_loss", "val_accuracy"):
        assert [r[key] for r in resumed.histories[0]] == [r[key] for r in whole.histories[0]]
    whole_weights = checkpoint.read(tmp_path / "whole" / "last")[1]
    resumed_weights = checkpoint.read(tmp_path / "cut" / "last")[1]
    assert whole_weights.keys() == resumed_weights.keys()
    for name in whole_weights:
        np.testing.assert_array_equal(resumed_weights[name], whole_weights[name], err_msg=name)
    assert resumed.value == whole.value


@pytest.mark.slow
@pytest.mark.skipif("numba" not in CPU_BACKENDS, reason="the numba backend is not available")
@pytest.mark.parametrize("cell, accuracy, oov_accuracy", [("gru", 0.9224, 0.769), ("rnn", 0.9187, 0.772)])
def test_the_tagger_with_spellings_reaches_its_measured_accuracy_on_the_subset(cell, accuracy, oov_accuracy):
    result = tagging.TASK.train(backend="numba", cell=cell, progress=False)
    assert result.value > accuracy - 0.004              # the baseline: 0.8129
    assert result.details["oov_accuracy"] > oov_accuracy - 0.01      # the baseline: 0.340
    assert result.details["test_words"] == 25094
