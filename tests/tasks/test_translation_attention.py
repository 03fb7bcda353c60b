"""Attention translation: gradients of the attention layer and the translator, padding masks, beam search with
length normalisation, deduplication before the split, the CLI's options."""
import itertools
import subprocess
import sys

import numpy as np
import pytest

import rnnbackends
from rnnbackends.attention import AttentionTranslator, LuongAttention
from rnnbackends.decoding import beam_search, greedy_search, log_softmax
from rnnbackends.gradcheck import check_gradients
from rnnbackends.layers import Dropout, to_host
from rnnbackends.losses import categorical_cross_entropy
from rnnbackends.tasks import translation

CPU_BACKENDS = [b.name for b in rnnbackends.list_backends() if b.status == "available" and b.name in ("numpy", "numba")]
SOURCE, SOURCE_LENGTHS = np.array([[1, 2], [4, 3], [5, 0]]), np.array([3, 2])               # (S, B), (B,)
TARGET_IN, TARGET_LENGTHS = np.array([[2, 2], [5, 6], [7, 0]]), np.array([3, 2])            # (T, B), (B,)


@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_attention_gradients_match_finite_differences(backend_name):
    rng = np.random.default_rng(0)
    attention = LuongAttention(4, 6, rng, backend=backend_name, dtype="float64")
    a, memory = rng.normal(size=(3, 2, 4)), rng.normal(size=(5, 2, 6))                      # A (T, B, H), M (S, B, K)
    lengths, weights = np.array([5, 2]), rng.normal(size=(3, 2, 4))

    def loss():
        return float((to_host(attention.forward(a, memory, lengths)) * weights).sum())

    loss()
    d_a, d_memory = attention.backward(attention.xp.asarray(weights))
    check_gradients(loss, {**attention.params, "a": a, "memory": memory},
                    {**attention.grads, "a": d_a, "memory": d_memory}, max_checks=30)


def test_padding_gets_no_weight_no_influence_and_no_gradient():
    rng = np.random.default_rng(1)
    attention = LuongAttention(4, 6, rng, backend="numpy", dtype="float64")
    a, memory, lengths = rng.normal(size=(3, 2, 4)), rng.normal(size=(5, 2, 6)), np.array([5, 2])
    out = attention.forward(a, memory, lengths)
    weights = attention.weights                                                              # (T, B, S)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0)
    assert (weights[:, 1, 2:] == 0).all() and (weights[:, 0] > 0).all()
    _, d_memory = attention.backward(np.ones_like(out))
    assert (d_memory[2:, 1] == 0).all() and (d_memory[:2, 1] != 0).all()
    changed = memory.copy()
    changed[2:, 1] = 1e3                                                                     # other padding content
    np.testing.assert_array_equal(attention.forward(a, changed, lengths), out)
    np.testing.assert_allclose(attention.forward(a[:, 1:], memory[:2, 1:]), out[:, 1:])    # as if never padded


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("backend_name", CPU_BACKENDS)
def test_translator_gradients_with_dropout(backend_name, cell):
    model = AttentionTranslator(9, 8, embed_dim=3, hidden_size=4, cell=cell, dropout=0.3, backend=backend_name,
                                dtype="float64")
    weights = np.random.default_rng(2).normal(size=(3, 2, 8))

    def loss():
        for layer in model.layers.values():                                     # the same dropout masks every call
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(4)
        return float((to_host(model.forward(SOURCE, SOURCE_LENGTHS, TARGET_IN, TARGET_LENGTHS)) * weights).sum())

    loss()
    model.backward(model.xp.asarray(weights))
    check_gradients(loss, model.params, model.grads, max_checks=12)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_decoding_step_by_step_matches_teacher_forcing(cell):
    model = AttentionTranslator(9, 8, embed_dim=3, hidden_size=4, cell=cell, backend="numpy", dtype="float64")
    model.eval()
    forced = to_host(model.forward(SOURCE, SOURCE_LENGTHS, TARGET_IN))                     # (T, B, V)
    state = model.encode(SOURCE, SOURCE_LENGTHS)
    for t in range(3):
        logits, state = model.step(TARGET_IN[t], state)
        np.testing.assert_allclose(logits, forced[t], rtol=1e-10)


class CountingModel:
    """A hand-made next-word distribution over <s>=0, </s>=1, a=2: after n a's, P(</s>) = ENDING[n]."""

    ENDING = [0.5, 0.1, 0.95, 0.95]

    def step(self, tokens, state):
        """tokens (B,), state (1, B, 1) the a's so far -> logits (B, 3), the new state."""
        count = state[0, :, 0] + (tokens == 2)
        p_end = np.array([self.ENDING[int(c)] for c in count])
        logits = np.log(np.stack([np.full_like(p_end, 1e-9), p_end, 1.0 - p_end], axis=1))
        return logits, count[None, :, None]


def test_length_normalisation_prefers_the_longer_sentence():
    # "</s>" alone: log P = log 0.5 = -0.69; "a a </s>": log 0.5 + log 0.9 + log 0.95 = -0.85, but per word -0.28
    model, state = CountingModel(), np.zeros((1, 1, 1))
    ids, scores = beam_search(model.step, state, 0, 1, 5, beam_size=3, alpha=1.0)
    assert ids == [[2, 2]]
    np.testing.assert_allclose(scores, [np.log(0.5 * 0.9 * 0.95) / 3])
    ids, scores = beam_search(model.step, state, 0, 1, 5, beam_size=3, alpha=0.0)   # unnormalised: the shortest
    assert ids == [[]]
    np.testing.assert_allclose(scores, [np.log(0.5)])


def test_wide_beam_finds_the_best_normalised_sentence_of_a_tiny_translator():
    model = AttentionTranslator(7, 5, embed_dim=3, hidden_size=4, cell="gru", backend="numpy", dtype="float64",
                                seed=3)
    start, end, steps, alpha = 2, 3, 3, 1.0
    ids, scores = model.translate(SOURCE, SOURCE_LENGTHS, start, end, steps, beam_size=200, alpha=alpha)
    for b in range(2):
        best = -np.inf
        for length in range(1, steps + 1):                             # every sentence of up to ``steps`` words
            for words in itertools.product(range(5), repeat=length):
                if end in words[:-1]:
                    continue
                state = model.encode(SOURCE[:, b:b + 1], SOURCE_LENGTHS[b:b + 1])
                log_p, token = 0.0, start
                for word in words:
                    logits, state = model.step(np.array([token]), state)
                    log_p += log_softmax(logits)[0, word]
                    token = word
                if words[-1] == end or length == steps:
                    best = max(best, log_p / length ** alpha)
        assert scores[b] == pytest.approx(best, rel=1e-9)
    state = model.encode(SOURCE, SOURCE_LENGTHS)
    greedy = greedy_search(model.step, state, start, end, steps, alpha)
    width_one = beam_search(model.step, state, start, end, steps, 1, alpha)
    assert greedy[0] == width_one[0]
    np.testing.assert_allclose(greedy[1], width_one[1])


def test_near_duplicates_are_removed_before_a_split_grouped_by_english():
    pairs = [("Go.", "Ve."), ("go!", "ve"), ("Go.", "Vete."), ("Hi.", "Hola."), ("  hi ", "¡Hola!")]
    assert translation.deduplicate(pairs) == [("Go.", "Ve."), ("Go.", "Vete."), ("Hi.", "Hola.")]
    read = translation.read_pairs(None)
    d = translation.prepare(None)
    assert d.duplicates == len(read) - len(d.pairs) > 0
    assert len({(translation.normalise(e), translation.normalise(s)) for e, s in d.pairs}) == len(d.pairs)
    train, val, test = d.train, d.val, d.test
    assert len(set(train) | set(val) | set(test)) == len(d.pairs) == len(train) + len(val) + len(test)
    assert 2000 <= len(test) < 2010 and 1000 <= len(val) < 1010
    english = [{translation.normalise(d.pairs[i][0]) for i in part} for part in (train, val, test)]
    assert not english[0] & english[2] and not english[0] & english[1] and not english[1] & english[2]
    again = translation.split(d.pairs)
    for part, same in zip((train, val, test), again):
        np.testing.assert_array_equal(part, same)


def test_attention_map_rows_are_distributions_over_the_source_words():
    d = translation.prepare(None)
    model = AttentionTranslator(len(d.source_vocabulary), len(d.target_vocabulary), embed_dim=4, hidden_size=6,
                                backend="numpy")
    shown = translation.attention_map(model, d, "Where is the station?")
    weights = np.array(shown["weights"])
    assert shown["source"] == ["where", "is", "the", "station", "?"] and shown["target"][-1] == translation.END
    assert weights.shape == (len(shown["target"]), 5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("arguments, message", [
    (["translation", "--attention", "bahdanau"], "--attention must be one of luong, none, got 'bahdanau'"),
    (["translation", "--cell", "transformer"], "--cell must be one of rnn, gru, lstm"),
    (["sentiment", "--attention", "luong"], "task sentiment does not take --attention"),
])
def test_cli_refuses_bad_options_before_any_work(arguments, message):
    done = subprocess.run([sys.executable, "-m", "rnnbackends.cli", "train", *arguments], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_output_layer_on_the_valid_rows_alone_equals_the_masked_loss(cell):
    model = AttentionTranslator(9, 8, embed_dim=3, hidden_size=4, cell=cell, dropout=0.3, backend="numpy",
                                dtype="float64")
    targets = np.array([[5, 6], [7, 3], [3, 0]])                                            # y </s> (T, B)
    mask = np.arange(3)[:, None] < TARGET_LENGTHS[None, :]                                  # (T, B)
    results = []
    for rows in (None, np.flatnonzero(mask)):
        for layer in model.layers.values():                                     # the same dropout masks each time
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(4)
        logits = model.forward(SOURCE, SOURCE_LENGTHS, TARGET_IN, TARGET_LENGTHS, rows)
        loss_fn = translation.valid_rows_cross_entropy if rows is not None else categorical_cross_entropy
        loss, d_logits = loss_fn(logits, targets, mask)
        model.backward(d_logits)
        results.append((logits, loss, {name: grad.copy() for name, grad in model.grads.items()}))
    (full, full_loss, full_grads), (valid, valid_loss, valid_grads) = results
    assert valid.shape == (mask.sum(), 8)
    np.testing.assert_array_equal(valid, full[mask])
    assert valid_loss == pytest.approx(full_loss, rel=1e-14)
    assert full_grads.keys() == valid_grads.keys()
    for name in full_grads:
        np.testing.assert_allclose(valid_grads[name], full_grads[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_attention_statistics_of_uniform_and_of_one_hot_weights():
    d = translation.prepare(None)
    model = AttentionTranslator(len(d.source_vocabulary), len(d.target_vocabulary), embed_dim=4, hidden_size=6,
                                backend="numpy", dtype="float64")
    model.attention.params["w_alpha"][...] = 0.0                                  # every score 0: α uniform
    uniform = translation.attention_statistics(model, d, d.test[:60], batch_size=25)
    assert uniform["pairs"] == 60 and uniform["target_steps"] == sum(len(d.target_ids[i]) + 1 for i in d.test[:60])
    for name in ("entropy", "last_source_mass", "diagonal_mass"):
        assert uniform[name] == pytest.approx(uniform[f"uniform_{name}"], rel=1e-9)
    model.attention.params["w_alpha"][...] = np.eye(6) * 1e4                    # α one-hot: entropy 0
    peaked = translation.attention_statistics(model, d, d.test[:60], batch_size=25)
    assert peaked["entropy"] < 1e-3 < uniform["entropy"]
