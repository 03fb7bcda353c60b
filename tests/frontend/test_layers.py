"""Every front-end layer, loss and model passes the public finite-difference gradient checker."""
import numpy as np
import pytest

import rnnbackends
from rnnbackends.gradcheck import check_gradients
from rnnbackends.layers import (
    RNN,
    Dense,
    Dropout,
    Embedding,
    Linear,
    OneHot,
    SequencePool,
    Sigmoid,
    Softmax,
    reverse_index,
    to_host,
)
from rnnbackends.losses import binary_cross_entropy, categorical_cross_entropy, mean_squared_error
from rnnbackends.models import EncoderDecoder, Forecaster, LanguageModel, SequenceClassifier, SequenceTagger

AVAILABLE = [b.name for b in rnnbackends.list_backends() if b.status == "available"]
T, B, D, H, V, K = 5, 3, 4, 3, 11, 4
LENGTHS = np.array([5, 2, 4])


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def weighted_sum(output, seed=99):
    """A loss with a dense, non-uniform gradient: Σ output ⊙ R for a fixed random R."""
    return float((to_host(output) * rand(*output.shape, seed=seed)).sum())


def r_like(output, xp, seed=99):
    return xp.asarray(rand(*output.shape, seed=seed))


@pytest.fixture(params=AVAILABLE)
def backend(request):
    return rnnbackends.get_backend(request.param)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_gradients(backend, bidirectional, return_sequences, nonlinearity):
    xp = backend.xp
    rnn = RNN(D, H, num_layers=2, bidirectional=bidirectional, nonlinearity=nonlinearity, dropout=0.3,
              return_sequences=return_sequences, rng=np.random.default_rng(1), backend=backend, dtype="float64")
    dirs = rnn.directions
    x = xp.asarray(rand(T, B, D, seed=2))
    a0 = xp.asarray(0.5 * rand(2 * dirs, B, H, seed=3))

    def loss():
        for dropout in rnn.dropouts:
            dropout.rng = np.random.default_rng(7)                  # the same dropout masks every call
        y = rnn.forward(x, LENGTHS, a0)
        return weighted_sum(y) + weighted_sum(rnn.a_n, seed=98)

    for dropout in rnn.dropouts:
        dropout.rng = np.random.default_rng(7)
    y = rnn.forward(x, LENGTHS, a0)
    d_x = rnn.backward(r_like(y, xp), r_like(rnn.a_n, xp, seed=98))
    check_gradients(loss, {**rnn.params, "x": x, "a0": a0}, {**rnn.grads, "x": d_x, "a0": rnn.d_a0},
                    rtol=1e-5, atol=1e-7)


def test_rnn_padding_is_zero_and_reverse_reads_within_length(backend):
    xp = backend.xp
    rnn = RNN(D, H, bidirectional=True, backend=backend, dtype="float64")
    x = rand(T, B, D, seed=4)
    a = to_host(rnn.forward(xp.asarray(x), LENGTHS))
    for b, length in enumerate(LENGTHS):
        assert (a[length:, b] == 0).all()
        # the reverse direction of row b equals running the forward kernel on the row's reversed valid steps
        single = RNN(D, H, backend=backend, dtype="float64")
        single.params.update({k.replace("_reverse", ""): v for k, v in rnn.params.items() if "reverse" in k})
        reversed_row = to_host(single.forward(xp.asarray(x[:length, b:b + 1][::-1].copy())))
        np.testing.assert_allclose(a[:length, b, H:], reversed_row[::-1, 0], rtol=1e-12)
    assert (reverse_index(LENGTHS, T, B)[:, 1] == [1, 0, 2, 3, 4]).all()


def test_embedding_gradients_and_padding(backend):
    xp = backend.xp
    emb = Embedding(V, D, padding_idx=0, rng=np.random.default_rng(0), backend=backend, dtype="float64")
    ids = np.array([[1, 2, 2], [3, 0, 4], [0, 0, 5]])              # repeated ids accumulate
    assert (to_host(emb.params["weight"])[0] == 0).all()

    def loss():
        return weighted_sum(emb.forward(ids))

    emb.backward(r_like(emb.forward(ids), xp))
    assert (to_host(emb.grads["weight"])[0] == 0).all()
    # the padding row is excluded: it is used (as zeros) but by definition never trained
    check_gradients(loss, {"weight": emb.params["weight"][1:]}, {"weight": emb.grads["weight"][1:]})


def test_one_hot_is_the_lecture_encoding(backend):
    x = to_host(OneHot(V, padding_idx=0, backend=backend).forward(np.array([[3, 0]])))
    assert x.shape == (1, 2, V) and x[0, 0, 3] == 1 and x[0, 0].sum() == 1 and x[0, 1].sum() == 0


def test_embedding_loads_glove_and_word2vec_text(tmp_path, backend):
    from rnnbackends.data import Vocabulary
    vocabulary = Vocabulary(["<pad>", "<unk>", "good", "bad"])
    glove = tmp_path / "glove.txt"
    glove.write_text("good 1 2 3\nunseen 9 9 9\nbad -1 -2 -3\n")
    word2vec = tmp_path / "w2v.txt"
    word2vec.write_text("2 3\ngood 1 2 3\nbad -1 -2 -3\n")
    for path in (glove, word2vec):
        emb = Embedding(4, 3, backend=backend, dtype="float64")
        assert emb.load_vectors(path, vocabulary) == 2
        np.testing.assert_array_equal(to_host(emb.params["weight"])[2:], [[1, 2, 3], [-1, -2, -3]])
    with pytest.raises(ValueError, match="expected a word and 5 numbers"):
        Embedding(4, 5, backend=backend).load_vectors(glove, vocabulary)


def test_dense_gradients_on_sequences(backend):
    xp = backend.xp
    dense = Dense(H, K, rng=np.random.default_rng(0), backend=backend, dtype="float64")
    x = xp.asarray(rand(T, B, H, seed=5))

    def loss():
        return weighted_sum(dense.forward(x))

    d_x = dense.backward(r_like(dense.forward(x), xp))
    check_gradients(loss, {**dense.params, "x": x}, {**dense.grads, "x": d_x})


@pytest.mark.parametrize("layer", [Sigmoid, Softmax, Linear, lambda **kw: SequencePool("mean", **kw),
                                   lambda **kw: SequencePool("max", **kw), lambda **kw: Dropout(0.4, **kw)])
def test_parameter_free_layers_gradients(backend, layer):
    xp = backend.xp
    layer = layer(backend=backend, dtype="float64")
    z = xp.asarray(rand(T, B, H, seed=6))
    pooled = isinstance(layer, SequencePool)

    def run():
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(3)
        return layer.forward(z, LENGTHS) if pooled else layer.forward(z)

    y = run()
    d_z = layer.backward(r_like(y, xp))
    check_gradients(lambda: weighted_sum(run()), {"z": z}, {"z": d_z})


def test_max_pooling_takes_each_rows_largest_valid_step_in_training_and_evaluation(backend):
    a = rand(T, B, H, seed=13) - 5.0                                     # every value below the padding's 0
    lengths = np.array(LENGTHS)
    expected = np.stack([a[:n, b].max(axis=0) for b, n in enumerate(lengths)])
    pool = SequencePool("max", backend=backend, dtype="float64")
    trained = to_host(pool.forward(backend.xp.asarray(a), lengths))
    pool.training = False
    np.testing.assert_array_equal(to_host(pool.forward(backend.xp.asarray(a), lengths)), expected)
    np.testing.assert_array_equal(trained, expected)


@pytest.mark.parametrize("masked", [False, True])
def test_loss_gradients(backend, masked):
    xp = backend.xp
    mask = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool) if masked else None
    z = xp.asarray(rand(2, 3, seed=7))
    y01 = (rand(2, 3, seed=8) > 0).astype(float)
    zk = xp.asarray(rand(2, 3, K, seed=9))
    yk = np.random.default_rng(0).integers(0, K, (2, 3))
    for loss_fn, logits, target in ((binary_cross_entropy, z, y01), (mean_squared_error, z, rand(2, 3, seed=10)),
                                    (categorical_cross_entropy, zk, yk)):
        value, grad = loss_fn(logits, xp.asarray(target), mask)
        check_gradients(lambda: loss_fn(logits, xp.asarray(target), mask)[0], {"logits": logits}, {"logits": grad})
        if masked:                                                  # padding changes nothing
            assert (to_host(grad)[~mask] == 0).all()


def test_categorical_cross_entropy_on_non_contiguous_logits():
    z = rand(3, 5, 7, seed=12).swapaxes(0, 1)                          # (5, 3, 7), not C-contiguous
    y = np.random.default_rng(1).integers(0, 7, (5, 3))
    loss, grad = categorical_cross_entropy(z, y)
    expected_loss, expected_grad = categorical_cross_entropy(np.ascontiguousarray(z), y)
    assert loss == pytest.approx(expected_loss)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-15)


def test_losses_match_the_textbook_formulas():
    z = np.array([-2.0, 0.5, 30.0])
    y = np.array([0.0, 1.0, 1.0])
    p = 1 / (1 + np.exp(-z))
    assert binary_cross_entropy(z, y)[0] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    logits = np.array([[1.0, 2.0, 3.0]])
    expected = -np.log(np.exp(3) / np.exp(logits).sum())
    assert categorical_cross_entropy(logits, np.array([2]))[0] == pytest.approx(expected)


MODELS = {
    "classifier": lambda be: (SequenceClassifier(V, 2, embed_dim=D, hidden_size=H, num_layers=2, bidirectional=True,
                                                 pooling="max", dropout=0.2, embed_dropout=0.1, backend=be,
                                                 dtype="float64"),
                              (np.array([[1, 2, 3], [4, 5, 0], [6, 0, 0]]), np.array([3, 2, 1])), (3,)),
    "classifier_onehot_last": lambda be: (SequenceClassifier(V, 3, embed_dim=0, hidden_size=H, backend=be,
                                                             dtype="float64"),
                                          (np.array([[1, 2], [4, 5]]), np.array([2, 1])), (2, 3)),
    "tagger": lambda be: (SequenceTagger(V, K, embed_dim=D, hidden_size=H, backend=be, dtype="float64"),
                          (np.array([[1, 2], [4, 0]]), np.array([2, 1])), (2, 2, K)),
    "language_model": lambda be: (LanguageModel(V, embed_dim=D, hidden_size=H, num_layers=2, backend=be,
                                                dtype="float64"),
                                  (np.array([[1, 2], [4, 3]]),), (2, 2, V)),
    "encoder_decoder": lambda be: (EncoderDecoder(V, V + 1, embed_dim=D, hidden_size=H, backend=be, dtype="float64"),
                                   (np.array([[1, 2], [4, 0]]), np.array([2, 1]), np.array([[1, 1], [5, 6], [7, 0]]),
                                    np.array([3, 2])), (3, 2, V + 1)),
    "forecaster": lambda be: (Forecaster(1, hidden_size=H, num_layers=2, horizon=2, backend=be, dtype="float64"),
                              (rand(6, 3, 1, seed=11),), (3, 2)),
}


@pytest.mark.parametrize("name", MODELS)
def test_model_gradients(backend, name):
    model, inputs, shape = MODELS[name](backend)
    xp = backend.xp

    def loss():
        for layer in model.layers.values():                         # the same dropout masks every call
            for dropout in [layer] * isinstance(layer, Dropout) + list(getattr(layer, "dropouts", [])):
                dropout.rng = np.random.default_rng(4)
        return model.forward(*inputs)

    out = loss()
    assert tuple(out.shape) == shape
    model.backward(r_like(out, xp))
    check_gradients(lambda: weighted_sum(loss()), model.params, model.grads, max_checks=15)
