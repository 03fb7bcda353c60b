"""Training pieces: cross-backend equality, optimisers (vs PyTorch), clipping, initialisers, seeds, TBPTT, data."""
import re

import numpy as np
import pytest

import rnnbackends
from rnnbackends.data import Batch, Tokenizer, Vocabulary, bptt_chunks, minibatches, pad_batch
from rnnbackends.initializers import initialize
from rnnbackends.layers import RNN, to_host
from rnnbackends.losses import binary_cross_entropy, categorical_cross_entropy
from rnnbackends.models import LanguageModel, SequenceClassifier
from rnnbackends.optimizers import SGD, Adagrad, Adam, RMSprop, clip_grad_norm, clip_grad_value
from rnnbackends.training import fit

AVAILABLE = [b.name for b in rnnbackends.list_backends() if b.status == "available"]
TEXTS = ["good food", "bad service and cold food", "great", "not good at all , sadly", "loved it !", "awful"]
LABELS = np.array([1, 0, 1, 0, 1, 0])


def toy_batches(vocabulary, tokenizer, rng):
    ids = [vocabulary.encode(tokenizer(t)) for t in TEXTS]
    return [Batch(pad_batch([ids[i] for i in rows]), LABELS[rows]) for rows in minibatches(len(ids), 3, rng)]


def short_run(backend, dtype, seed=0, epochs=3):
    """The loss of every epoch of a small bidirectional, dropout, variable-length training run."""
    tokenizer = Tokenizer()
    vocabulary = Vocabulary.build(tokenizer(t) for t in TEXTS)
    model = SequenceClassifier(len(vocabulary), 2, embed_dim=8, hidden_size=6, num_layers=2, bidirectional=True,
                               pooling="max", dropout=0.2, backend=backend, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    history = fit(model, binary_cross_entropy, Adam(0.01), lambda e: toy_batches(vocabulary, tokenizer, rng),
                  epochs=epochs, clip_norm=1.0, progress=False, log=None)
    return np.array([r["loss"] for r in history]), model


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 2e-5)])
def test_short_training_run_gives_the_same_losses_on_every_backend(dtype, rtol):
    assert "numpy" in AVAILABLE
    reference, ref_model = short_run("numpy", dtype)
    assert reference[-1] < reference[0]
    for name in AVAILABLE:
        losses, model = short_run(name, dtype)
        assert model.backend.name == name
        np.testing.assert_allclose(losses, reference, rtol=rtol, err_msg=f"backend {name}")
        for key, value in model.state_dict().items():
            np.testing.assert_allclose(value, ref_model.state_dict()[key], rtol=100 * rtol, atol=100 * rtol)


def test_seed_makes_a_run_reproducible():
    a, _ = short_run("numpy", "float32", seed=3)
    b, _ = short_run("numpy", "float32", seed=3)
    c, _ = short_run("numpy", "float32", seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("name", ["sgd", "sgd_nesterov", "adagrad", "rmsprop", "adam", "adamw"])
def test_optimizers_match_pytorch(name):
    torch = pytest.importorskip("torch")
    ours, theirs = {
        "sgd": (lambda: SGD(0.1, momentum=0.9), lambda p: torch.optim.SGD(p, 0.1, momentum=0.9)),
        "sgd_nesterov": (lambda: SGD(0.1, momentum=0.9, nesterov=True),
                         lambda p: torch.optim.SGD(p, 0.1, momentum=0.9, nesterov=True)),
        "adagrad": (lambda: Adagrad(0.1), lambda p: torch.optim.Adagrad(p, 0.1)),
        "rmsprop": (lambda: RMSprop(0.01, rho=0.9, eps=1e-8),
                    lambda p: torch.optim.RMSprop(p, 0.01, alpha=0.9, eps=1e-8)),
        "adam": (lambda: Adam(0.01), lambda p: torch.optim.Adam(p, 0.01)),
        "adamw": (lambda: Adam(0.01, weight_decay=0.1), lambda p: torch.optim.AdamW(p, 0.01, weight_decay=0.1)),
    }[name]
    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4))
    param = start.copy()
    t_param = torch.tensor(start, requires_grad=True)
    optimizer, t_optimizer = ours(), theirs([t_param])
    for step in range(5):
        grad = rng.normal(size=(3, 4))
        optimizer.step({"w": param}, {"w": grad.copy()})
        t_param.grad = torch.tensor(grad)
        t_optimizer.step()
    np.testing.assert_allclose(param, t_param.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert not np.allclose(param, start)


def test_clipping_by_global_norm_and_by_value():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    np.testing.assert_allclose(grads["b"], [[0.8]])
    assert clip_grad_norm(grads, 10.0) == pytest.approx(1.0) and grads["a"][0] == pytest.approx(0.6)
    grads = {"a": np.array([-3.0, 0.5])}
    clip_grad_value(grads, 1.0)
    np.testing.assert_array_equal(grads["a"], [-1.0, 0.5])


def test_initializers():
    rng = np.random.default_rng(0)
    u = initialize("uniform", (50, 16), 16, rng)
    assert np.abs(u).max() <= 0.25 and np.abs(u).max() > 0.24
    g = initialize("glorot", (50, 16), 16, rng)
    bound = np.sqrt(6 / 66)
    assert np.abs(g).max() <= bound and np.abs(g).max() > 0.95 * bound
    q = initialize("orthogonal", (16, 16), 16, rng)
    np.testing.assert_allclose(q.T @ q, np.eye(16), atol=1e-12)
    wide = initialize("orthogonal", (4, 9), 9, rng)
    np.testing.assert_allclose(wide @ wide.T, np.eye(4), atol=1e-12)
    with pytest.raises(ValueError, match="unknown initialiser"):
        initialize("zeros", (2, 2), 2, rng)
    rnn = RNN(3, 5, init="glorot", recurrent_init="orthogonal", backend="numpy", dtype="float64")
    np.testing.assert_allclose(rnn.params["w_a_l0"] @ rnn.params["w_a_l0"].T, np.eye(5), atol=1e-12)


def test_rnn_layer_matches_pytorch_bidirectional_stacked_packed():
    torch = pytest.importorskip("torch")
    T, B, D, H = 6, 4, 3, 5
    lengths = np.array([6, 2, 4, 1])
    x = np.random.default_rng(1).normal(size=(T, B, D))
    ours = RNN(D, H, num_layers=2, bidirectional=True, backend="numpy", dtype="float64")
    theirs = torch.nn.RNN(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    with torch.no_grad():
        for name, p in theirs.named_parameters():       # weight_ih = w_xᵀ, weight_hh = w_aᵀ, b_ih + b_hh = b_a
            kind, which, key = re.fullmatch(r"(weight|bias)_(ih|hh)_(l\d(?:_reverse)?)", name).groups()
            if kind == "weight":
                p.copy_(torch.tensor(ours.params[f"{'w_x' if which == 'ih' else 'w_a'}_{key}"].T))
            else:
                p.copy_(torch.tensor(ours.params[f"b_a_{key}"] if which == "ih" else np.zeros(H)))
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), enforce_sorted=False)
    out, h_n = theirs(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    a = ours.forward(x, lengths)
    np.testing.assert_allclose(a, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.a_n, h_n.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_truncated_bptt_carries_the_state_across_chunks():
    stream = np.random.default_rng(0).integers(0, 7, 41)
    chunks = bptt_chunks(stream, batch_size=2, steps=5)
    assert len(chunks) == 4 and chunks[0].inputs[0].shape == (5, 2)
    np.testing.assert_array_equal(chunks[1].inputs[0][0], stream[[5, 25]])
    np.testing.assert_array_equal(chunks[0].targets[:, 0], stream[1:6])
    model = LanguageModel(7, embed_dim=4, hidden_size=8, stateful=True, backend="numpy", dtype="float64")
    whole = to_host(model.forward(np.concatenate([c.inputs[0] for c in chunks])))
    model.reset_state()
    pieces = np.concatenate([to_host(model.forward(c.inputs[0])) for c in chunks])
    np.testing.assert_allclose(pieces, whole, rtol=1e-12)              # the carried state continues each row
    history = fit(model, categorical_cross_entropy, Adam(0.05), lambda e: chunks, epochs=15, progress=False, log=None)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]


def test_early_stopping_restores_the_best_weights():
    tokenizer = Tokenizer()
    vocabulary = Vocabulary.build(tokenizer(t) for t in TEXTS)
    model = SequenceClassifier(len(vocabulary), embed_dim=4, hidden_size=4, backend="numpy")
    scores = iter([0.5, 0.4, 0.45, 0.6, 0.7, 0.1, 0.1])
    snapshots = []

    def validate(m):
        snapshots.append(m.state_dict())
        return {"val_loss": next(scores)}

    history = fit(model, binary_cross_entropy, Adam(0.01), lambda e: toy_batches(vocabulary, tokenizer, None),
                  epochs=7, validate=validate, patience=2, progress=False, log=None)
    assert len(history) == 4                                           # best at epoch 2, then two without improvement
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, snapshots[1][key])


def test_tokenizer_vocabulary_and_padding():
    assert Tokenizer()("Good, cheap food!") == ["good", ",", "cheap", "food", "!"]
    assert Tokenizer("char", lower=False)("Hi!") == ["H", "i", "!"]
    vocabulary = Vocabulary.build([["b", "a", "b"], ["c"]], min_count=1)
    assert vocabulary.tokens == ["<pad>", "<unk>", "b", "a", "c"]
    assert vocabulary.encode(["a", "zzz"]) == [3, 1] and vocabulary.decode([2, 4]) == ["b", "c"]
    ids, lengths = pad_batch([[5, 6, 7], [8]])
    np.testing.assert_array_equal(ids, [[5, 8], [6, 0], [7, 0]])
    np.testing.assert_array_equal(lengths, [3, 1])
    with pytest.raises(ValueError):
        Vocabulary(["a", "b"])
