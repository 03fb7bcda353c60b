"""English -> Spanish on the real Tatoeba pairs: splits, BLEU, greedy against beam search, the CLI."""
import subprocess
import sys

import numpy as np
import pytest
import sacrebleu

import rnnbackends
from rnnbackends import checkpoint
from rnnbackends.data import Tokenizer, Vocabulary
from rnnbackends.datasets import default_data, read_text
from rnnbackends.decoding import beam_search, greedy_search
from rnnbackends.gradcheck import check_gradients
from rnnbackends.layers import Dropout, to_host
from rnnbackends.models import EncoderDecoder
from rnnbackends.tasks import translation

PAIRS = default_data("translation")
pytestmark = pytest.mark.skipif(not PAIRS.is_file(), reason=f"no Tatoeba pairs at {PAIRS}")
CPU_BACKENDS = [b.name for b in rnnbackends.list_backends() if b.status == "available" and b.name in ("numpy", "numba")]


def test_copy_baseline_bleu_is_sacrebleu_and_low():
    d = translation.prepare(None)
    english, spanish = [d.pairs[i][0] for i in d.test], [d.pairs[i][1] for i in d.test]
    copy = translation.bleu(english, spanish)
    assert copy == pytest.approx(sacrebleu.corpus_bleu(english, [spanish], lowercase=True).score)
    assert 0.0 < copy < 5.0
    assert translation.bleu(spanish, spanish) == pytest.approx(100.0)
    assert 0.0 < translation.chrf(english, spanish) < 30.0
    assert translation.chrf(spanish, spanish) == pytest.approx(100.0)


def test_detokenize_and_reversed_source():
    assert translation.detokenize(["¿", "tienes", "una", "mascota", "?"]) == "¿tienes una mascota?"
    vocabulary = Vocabulary(["<pad>", "<unk>", "do", "you"])
    assert translation.encode_source(vocabulary, ["do", "you", "swim"], reverse=True) == [1, 3, 2]


@pytest.mark.parametrize("feed_context", [False, True])
@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_encoder_decoder_with_dropout_gradients(backend_name, feed_context):
    model = EncoderDecoder(9, 8, embed_dim=3, hidden_size=4, dropout=0.3, feed_context=feed_context,
                           backend=backend_name, dtype="float64")
    inputs = (np.array([[1, 2], [4, 3], [5, 0]]), np.array([3, 2]), np.array([[2, 2], [5, 6], [7, 0]]), np.array([3,
                                                                                                                  2]))
    weights = np.random.default_rng(2).normal(size=(3, 2, 8))

    def loss():
        for layer in model.layers.values():                                     # the same dropout masks every call
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(4)
        return float((to_host(model.forward(*inputs)) * weights).sum())

    loss()
    model.backward(model.xp.asarray(weights))
    check_gradients(loss, model.params, model.grads, max_checks=12)


@pytest.mark.parametrize("feed_context", [False, True])
def test_decoding_step_by_step_matches_teacher_forcing(feed_context):
    model = EncoderDecoder(9, 8, embed_dim=3, hidden_size=4, feed_context=feed_context, backend="numpy",
                           dtype="float64")
    model.eval()
    source, lengths, target_in = np.array([[1, 2], [4, 3], [5, 0]]), np.array([3, 2]), np.array([[2, 2], [5, 6], [7,
                                                                                                                  3]])
    forced = to_host(model.forward(source, lengths, target_in))                   # (T, B, V)
    state = model.encode(source, lengths)
    for t in range(3):
        logits, state = model.step(target_in[t], state)
        np.testing.assert_allclose(logits, forced[t], rtol=1e-10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("translation")
    lines = read_text(PAIRS).split("\n")
    (folder / "pairs.txt").write_text("\n".join(lines[:20000:2]) + "\n", encoding="utf-8")   # 10000 short pairs
    backend = "numba" if "numba" in CPU_BACKENDS else "numpy"
    result = translation.TASK.train(folder / "pairs.txt", backend=backend, epochs=8, save=folder / "model",
                                    progress=False, cell="gru")
    return result, folder


@pytest.mark.slow
def test_training_beats_copying_the_source(trained):
    result, _ = trained
    details = result.details
    assert details["test_pairs"] + details["validation_pairs"] + details["train_pairs"] == \
        10000 - details["duplicates_removed"]
    kept = 10000 - details["duplicates_removed"]
    assert details["duplicates_removed"] > 0 and kept // 10 <= details["test_pairs"] < kept // 10 + 10
    assert result.value > result.baseline + 5                 # measured: 8.56 against 0.66 (8,000 training pairs)
    assert details["bleu_greedy"] > result.baseline + 4       # 7.63
    assert details["chrf_beam"] > details["chrf_copy"] + 8    # 23.7 against 12.0


@pytest.mark.slow
def test_attention_plot_of_the_trained_model(trained, tmp_path):
    result, _ = trained
    shown = result.plot_series
    assert shown["source"] == ["do", "you", "have", "a", "pet", "?"] and shown["target"][-1] == translation.END
    weights = np.array(shown["weights"])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    aligned = result.details["attention_statistics"]   # not collapsed onto one source word (unscaled scores: 1.00)
    assert aligned["diagonal_mass"] > aligned["uniform_diagonal_mass"] + 0.1     # measured: 0.68 against 0.50
    assert aligned["last_source_mass"] < 0.7 and aligned["entropy"] > 0.1      # 0.47 and 0.41 nats
    translation.plot_translation(result, tmp_path / "attention.png")
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_beam_search_scores_at_least_greedy_and_width_one_is_greedy(trained):
    _, folder = trained
    models, meta = checkpoint.load(folder / "model", "numpy")
    model = models[0]
    source_vocabulary, target_vocabulary = Vocabulary(meta["source_vocabulary"]), Vocabulary(meta["target_vocabulary"])
    tokenizer = Tokenizer(**meta["tokenizer"])
    english = [line.split("\t")[0] for line in read_text(PAIRS).split("\n")[1:3000:20]]
    sources = [translation.encode_source(source_vocabulary, tokenizer(e), meta["reverse_source"]) for e in english]
    _, greedy = translation.translate_ids(model, sources, target_vocabulary, beam_size=1)
    _, beam = translation.translate_ids(model, sources, target_vocabulary, beam_size=5)
    assert beam.mean() > greedy.mean()
    assert (beam >= greedy - 1e-5).mean() >= 0.9       # ties differ by float32 rounding
    start, end = target_vocabulary.index[translation.START], target_vocabulary.index[translation.END]
    state = model.encode(*translation.pad_batch(sources[:20]))
    ids_greedy, scores_greedy = greedy_search(model.step, state, start, end, 20)
    ids_width_one, scores_width_one = beam_search(model.step, state, start, end, 20, beam_size=1)
    assert ids_width_one == ids_greedy
    np.testing.assert_allclose(scores_width_one, scores_greedy)


@pytest.mark.slow
def test_translate_cli_prints_one_spanish_line_per_english_line(trained):
    _, folder = trained
    out = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "translate", "--checkpoint",
                          str(folder / "model")], input="Do you have a pet?\n\nI am tired.\n",
                         capture_output=True, text=True, check=True).stdout
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 2 and all(line.strip() for line in lines)
    wrong = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "translate", "--checkpoint", str(folder)],
                           input="Hello.\n", capture_output=True, text=True)
    assert wrong.returncode != 0 and "checkpoint" in wrong.stderr and "Traceback" not in wrong.stderr
