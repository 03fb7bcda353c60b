"""Character-level language modelling on tiny Shakespeare: sampling rules, seeded generation, training, the CLI."""
import math
import subprocess
import sys

import numpy as np
import pytest

import rnnbackends
from rnnbackends.data import bptt_chunks
from rnnbackends.datasets import default_data, read_text
from rnnbackends.decoding import sample_token
from rnnbackends.gradcheck import check_gradients
from rnnbackends.losses import categorical_cross_entropy
from rnnbackends.models import LanguageModel
from rnnbackends.optimizers import Adam
from rnnbackends.tasks import textgen
from rnnbackends.training import Member, train_members

SHAKESPEARE = default_data("textgen")
AVAILABLE_BACKENDS = [b.name for b in rnnbackends.list_backends() if b.status == "available"]
needs_data = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"no tiny Shakespeare at {SHAKESPEARE}")


def test_top_k_sampling_only_emits_the_k_most_probable_tokens():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=40)
    top = set(np.argsort(logits)[-5:])
    drawn = {sample_token(logits, temperature=1.5, top_k=5, rng=rng) for _ in range(2000)}
    assert drawn == top                                    # every one of the 5 appears, nothing else does
    assert {sample_token(logits, 1.0, top_k=1, rng=rng) for _ in range(50)} == {int(logits.argmax())}


def test_temperature_zero_is_greedy_and_low_temperature_sharpens():
    rng = np.random.default_rng(1)
    logits = np.array([0.0, 1.0, 0.5, -1.0])
    assert sample_token(logits, temperature=0, rng=rng) == 1
    cold = [sample_token(logits, 0.2, rng=rng) for _ in range(500)]
    hot = [sample_token(logits, 5.0, rng=rng) for _ in range(500)]
    assert cold.count(1) > 450 and hot.count(1) < 250
    with pytest.raises(ValueError, match="temperature"):
        sample_token(logits, -1.0)


def test_generation_is_deterministic_under_a_seed():
    model = LanguageModel(12, embed_dim=4, hidden_size=8, backend="numpy", seed=3)

    def sample(seed):
        return model.generate([2, 3, 4], 40, temperature=1.0, top_k=6, rng=np.random.default_rng(seed))

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    assert len(sample(7)) == 40
    greedy = model.generate([2, 3, 4], 10, temperature=0)
    assert greedy == model.generate([2, 3, 4], 10, temperature=0, rng=np.random.default_rng(99))


def test_generation_after_a_prime_continues_its_state():
    model = LanguageModel(12, embed_dim=4, hidden_size=8, backend="numpy", seed=3)
    logits, state = model.step(np.array([2]))
    logits, state = model.step(np.array([3]), state)
    _, state = model.step(np.array([4]), state)
    first = int(np.argmax(model.step(np.array([5]), state)[0][0]))
    assert model.generate([2, 3, 4, 5], 1, temperature=0) == [first]


def test_ngram_baselines_match_a_hand_count():
    train = np.array([2, 3, 2, 3, 2])
    val = np.array([2, 3])
    baselines = textgen.ngram_baselines(train, val, 4)
    unigram = (np.bincount(train, minlength=4) + 1) / (5 + 4)
    assert baselines["unigram"] == pytest.approx(-np.mean(np.log(unigram[val])))
    assert baselines["bigram"] == pytest.approx(-math.log((2 + 1) / (2 + 4)))     # P(3 | 2): 2 of 2 seen, add-one


@pytest.mark.slow
@needs_data
def test_a_short_run_beats_the_ngram_baselines_and_generates_from_the_cli(tmp_path):
    text = tmp_path / "shakespeare-head.txt"
    text.write_text(read_text(SHAKESPEARE)[:120_000], encoding="utf-8")
    result = textgen.TASK.train(text, backend="numpy", epochs=3, save=tmp_path / "lm", progress=False)
    assert result.metric == "validation nats/char"
    assert result.value < result.baselines["unigram"] - 0.3
    assert result.details["bits_per_char"] == pytest.approx(result.value / math.log(2))
    command = [sys.executable, "-m", "rnnbackends.cli", "generate", "--checkpoint", str(tmp_path / "lm"),
               "--prime", "ROMEO:", "--length", "80", "--temperature", "0.8", "--top-k", "10", "--seed", "4"]
    first = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    again = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert first == again and first.startswith("ROMEO:") and len(first.rstrip("\n")) == len("ROMEO:") + 80
    greedy = command[:-6] + ["--temperature", "0"]                       # no seed: greedy needs none
    assert subprocess.run(greedy, capture_output=True, text=True, check=True).stdout == \
        subprocess.run(greedy, capture_output=True, text=True, check=True).stdout
    failed = subprocess.run(command[:-2] + ["--top-k", "0"], capture_output=True, text=True)
    assert failed.returncode != 0 and "top-k" in failed.stderr and "Traceback" not in failed.stderr


@pytest.mark.slow
@needs_data
def test_word_level_trains_and_generates_words(tmp_path):
    text = tmp_path / "head.txt"
    text.write_text(read_text(SHAKESPEARE)[:40_000], encoding="utf-8")
    result = textgen.TASK.train(text, backend="numpy", epochs=1, save=tmp_path / "lm", progress=False, level="word")
    assert result.metric == "validation nats/word" and np.isfinite(result.value)
    assert result.details["vocabulary"] > 500                    # words, not characters
    sample = textgen.generate(tmp_path / "lm", "first citizen:", 12, temperature=0.8, seed=2)
    assert sample == textgen.generate(tmp_path / "lm", "first citizen:", 12, temperature=0.8, seed=2)
    assert sample.startswith("first citizen:") and len(sample.split()) >= 8


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_truncated_bptt_carries_the_state_across_chunks(cell):
    model = LanguageModel(11, embed_dim=4, hidden_size=5, num_layers=2, cell=cell, stateful=True, backend="numpy",
                          dtype="float64", seed=2)
    model.eval()
    stream = np.random.default_rng(3).integers(0, 11, 3 * 21)
    chunks = bptt_chunks(stream, 3, 7)                                           # 3 rows of 20 steps, 7 at a time
    rows = np.concatenate([chunk.inputs[0] for chunk in chunks])                # (20, 3): each row continues
    assert rows[:, 1].tolist() == stream[20:40].tolist()
    whole = model.forward(rows)                                                 # one pass, fresh state
    model.reset_state()
    pieces = [model.forward(chunk.inputs[0]) for chunk in chunks]               # chunk by chunk, state carried
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=1e-12, atol=1e-12)
    model.reset_state()
    assert not np.allclose(model.forward(chunks[1].inputs[0]), pieces[1])       # without the state: different


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gradients_of_a_chunk_that_starts_from_a_carried_state(cell):
    model = LanguageModel(9, embed_dim=3, hidden_size=4, num_layers=2, dropout=0.0, cell=cell, stateful=True,
                          backend="numpy", dtype="float64", seed=1)
    first, second = bptt_chunks(np.random.default_rng(5).integers(0, 9, 2 * 13), 2, 6)[:2]
    model.forward(first.inputs[0])
    carried = model.state                                                       # (layers, B, H) or (2, layers, B, H)
    assert carried.shape == ((2,) if cell == "lstm" else ()) + (2, 2, 4)
    weights = np.random.default_rng(6).normal(size=(6, 2, 9))

    def loss():
        model.state = carried                                                   # the chunk starts from the carry
        return float((model.forward(second.inputs[0]) * weights).sum())

    loss()
    model.backward(weights)
    check_gradients(loss, model.params, model.grads, max_checks=10)


@pytest.mark.parametrize("flag, value", [("--layers", "0"), ("--hidden", "2.5"), ("--dropout", "1"),
                                         ("--batch-size", "-3"), ("--bptt", "many"), ("--lr-decay", "0"),
                                         ("--lr-decay", "1.5")])
def test_cli_refuses_bad_model_options_with_exit_2(flag, value):
    done = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "train", "textgen", flag, value],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert flag in done.stderr and value in done.stderr and "Traceback" not in done.stderr


def test_dropout_before_the_output_layer_is_inverted_and_off_in_evaluation():
    kwargs = dict(vocab_size=7, embed_dim=3, hidden_size=50, num_layers=1, backend="numpy", dtype="float64", seed=4)
    model, plain = LanguageModel(dropout=0.5, **kwargs), LanguageModel(dropout=0.0, **kwargs)
    ids = np.random.default_rng(0).integers(0, 7, (6, 4))
    model.eval()
    np.testing.assert_allclose(model.forward(ids), plain.forward(ids))          # eval: the same model
    model.train()
    model.forward(ids)
    mask = model.output_dropout.mask                                            # (T, B, H), one layer: no other
    assert set(np.unique(mask)) == {0.0, 2.0} and 0.3 < (mask == 0).mean() < 0.7
    a = model.rnn.forward(model.encoder.forward(ids))
    np.testing.assert_allclose(model.forward(ids), model.output.forward(a * model.output_dropout.mask))
    state = model.rng.bit_generator.state
    weights = np.random.default_rng(1).normal(size=(6, 4, 7))

    def loss():
        model.rng.bit_generator.state = state                                  # the same masks at every call
        return float((model.forward(ids) * weights).sum())

    loss()
    model.backward(weights)
    check_gradients(loss, model.params, model.grads, max_checks=10)


def test_lr_decay_halves_the_rate_after_each_epoch_without_improvement_and_resumes_with_it(tmp_path):
    scripted = [2.0, 1.5, 1.6, 1.4, 1.45, 1.5]                               # no improvement after epochs 3, 5, 6

    def run(epochs, resume=False, first_epoch=0):
        model = LanguageModel(5, embed_dim=2, hidden_size=3, backend="numpy", seed=0)
        chunks = bptt_chunks(np.arange(60) % 5, 2, 5)
        member = Member(model, Adam(0.01), lambda epoch: chunks)
        epochs_seen = [first_epoch]

        def validate(m):
            epochs_seen[0] += 1
            return {"val_loss": scripted[epochs_seen[0] - 1]}

        out = train_members([member], categorical_cross_entropy, validate, epochs=epochs, meta={"task": "textgen"},
                            data_fingerprint="x", save=tmp_path / "run", resume=resume, lr_decay=0.5,
                            progress=False)
        return out.histories[0], member.optimizer

    history, _ = run(6)
    assert [record["lr"] for record in history] == [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025]
    run(3)                                                                      # stopped after epoch 3 ...
    resumed, optimizer = run(6, resume=True, first_epoch=3)                    # ... and continued
    assert [record["lr"] for record in resumed] == [record["lr"] for record in history]
    assert optimizer.lr == 0.00125


def test_a_gated_cell_brings_its_own_defaults_and_the_simple_rnn_keeps_the_lecture_s(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(textgen, "LanguageModel", lambda *args, **kwargs: built.append(args[2:5]))
    monkeypatch.setattr(textgen, "bptt_chunks", lambda ids, rows, steps: built.append((rows, steps)) or 1 / 0)
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question. " * 40, encoding="utf-8")
    for cell, expected in (("rnn", [(256, 1, 0.0), (64, 100)]), ("lstm", [(256, 2, 0.2), (32, 64)])):
        with pytest.raises(ZeroDivisionError):
            textgen.TASK.train(text, cell=cell, progress=False)
        assert built[-2:] == expected                                            # (H, layers, dropout), (B, T)
    with pytest.raises(ZeroDivisionError):
        textgen.TASK.train(text, cell="gru", layers=3, dropout=0.0, bptt=50, progress=False)
    assert built[-2:] == [(256, 3, 0.0), (32, 50)]                              # given options win


def test_train_refuses_bad_model_options_before_reading_data(tmp_path):
    with pytest.raises(ValueError, match="--layers"):
        textgen.TASK.train(tmp_path / "missing.txt", layers=0)
    with pytest.raises(ValueError, match="--dropout"):
        textgen.TASK.train(tmp_path / "missing.txt", dropout=-0.1)


@pytest.mark.slow
@needs_data
@pytest.mark.skipif("numba" not in AVAILABLE_BACKENDS, reason="the numba backend is not available")
def test_one_epoch_of_the_gated_default_beats_the_ngrams_and_generates(tmp_path):
    result = textgen.TASK.train(backend="numba", epochs=1, save=tmp_path / "gru", progress=False, cell="gru")
    assert result.value < 1.87                          # measured 1.833 (2 x 256, dropout 0.2; the bigram: 2.482)
    assert [record["lr"] for record in result.histories[0]] == [0.002]
    assert result.details["train_tokens"] == 1003854
    command = [sys.executable, "-m", "rnnbackends.cli", "generate", "--checkpoint", str(tmp_path / "gru"),
               "--prime", "ROMEO:", "--length", "60", "--seed", "3"]
    first = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert first == subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert first.startswith("ROMEO:") and len(first.rstrip("\n")) == len("ROMEO:") + 60
