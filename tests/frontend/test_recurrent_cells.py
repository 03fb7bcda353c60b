"""The recurrent layer with each cell (stacked, bidirectional, lengths, initial state in, final state out) against
torch.nn.RNN / GRU / LSTM with the same weights, through rnnbackends.interop both ways; and gradient checks."""
import numpy as np
import pytest

import rnnbackends
from rnnbackends import models
from rnnbackends.gradcheck import check_gradients
from rnnbackends.interop import load_torch_state_dict, to_torch_state_dict
from rnnbackends.layers import GRU, LSTM, RNN, to_host

torch = pytest.importorskip("torch", reason="PyTorch parity tests need torch (pip install torch==2.13.0)")

AVAILABLE = [b.name for b in rnnbackends.list_backends() if b.status == "available"]
T, B, D, H, LAYERS = 6, 4, 3, 5, 2
LENGTHS = np.array([6, 2, 1, 4])


def backend_for(name, cell):
    """The backend, or a skip naming the cell it does not declare."""
    backend = rnnbackends.get_backend(name)
    if cell not in backend.capabilities:
        pytest.skip(f"backend {name!r} does not declare cell {cell!r}")
    return backend


def torch_module(cell):
    return {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](
        D, H, num_layers=LAYERS, bidirectional=True, dtype=torch.float64)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("name", AVAILABLE)
def test_layer_matches_torch_with_weights_converted_both_ways(name, cell):
    """Outputs, final states (A_n, C_n) and every gradient equal PyTorch's; weights go ours -> torch -> ours."""
    backend = backend_for(name, cell)
    xp, rng = backend.xp, np.random.default_rng(5)
    layer = RNN(D, H, num_layers=LAYERS, bidirectional=True, cell=cell, rng=np.random.default_rng(1), backend=backend,
                dtype="float64")
    module = torch_module(cell)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_state_dict(layer).items()})
    x = rng.standard_normal((T, B, D))
    a0 = 0.5 * rng.standard_normal((LAYERS * 2, B, H))
    c0 = 0.5 * rng.standard_normal((LAYERS * 2, B, H))
    d_y, d_a_n, d_c_n = (rng.standard_normal(s) for s in ((T, B, 2 * H), (LAYERS * 2, B, H), (LAYERS * 2, B, H)))

    x_t, a0_t, c0_t = (torch.from_numpy(v.copy()).requires_grad_() for v in (x, a0, c0))
    packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.from_numpy(LENGTHS), enforce_sorted=False)
    out, state = module(packed, (a0_t, c0_t) if cell == "lstm" else a0_t)
    y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    h_n, c_n = state if cell == "lstm" else (state, None)
    loss = (y_t * torch.from_numpy(d_y)).sum() + (h_n * torch.from_numpy(d_a_n)).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.from_numpy(d_c_n)).sum()
    loss.backward()

    state0 = (xp.asarray(a0), xp.asarray(c0)) if cell == "lstm" else xp.asarray(a0)
    y = layer.forward(xp.asarray(x), LENGTHS, state0)
    d_x = layer.backward(xp.asarray(d_y), xp.asarray(d_a_n), xp.asarray(d_c_n) if cell == "lstm" else None)
    close = dict(rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(to_host(y), y_t.detach().numpy(), **close)
    np.testing.assert_allclose(to_host(layer.a_n), h_n.detach().numpy(), **close)
    np.testing.assert_allclose(to_host(d_x), x_t.grad.numpy(), **close)
    np.testing.assert_allclose(to_host(layer.d_a0), a0_t.grad.numpy(), **close)
    if cell == "lstm":
        np.testing.assert_allclose(to_host(layer.c_n), c_n.detach().numpy(), **close)
        np.testing.assert_allclose(to_host(layer.d_c0), c0_t.grad.numpy(), **close)
    grads = type(layer)(D, H, num_layers=LAYERS, bidirectional=True, cell=cell, backend=backend, dtype="float64")
    grads.params = dict(layer.grads)                                   # our gradients, in torch's naming
    want = {k: v.grad.numpy() for k, v in module.named_parameters()}
    got = to_torch_state_dict(grads)
    if cell == "rnn":                                                  # one bias: d bias_hh = d bias_ih
        got = {k: got[k.replace("bias_hh", "bias_ih")] if k.startswith("bias_hh") else v for k, v in got.items()}
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, err_msg=key, **close)
    back = RNN(D, H, num_layers=LAYERS, bidirectional=True, cell=cell, backend=backend, dtype="float64")
    load_torch_state_dict(back, module.state_dict())                   # torch -> ours gives the same layer
    np.testing.assert_allclose(to_host(back.forward(xp.asarray(x), LENGTHS, state0)), to_host(y), **close)


@pytest.mark.parametrize("layer_class", [GRU, LSTM])
@pytest.mark.parametrize("name", [n for n in AVAILABLE if n != "torch"])   # the template is checked by the kit
def test_gated_layers_pass_the_gradient_checker(name, layer_class):
    """GRU and LSTM layers, stacked and bidirectional with dropout and lengths, pass the public checker."""
    cell = layer_class.__name__.lower()
    backend = backend_for(name, cell)
    xp = backend.xp
    layer = layer_class(D, H, num_layers=2, bidirectional=True, dropout=0.3, return_sequences=False,
                        rng=np.random.default_rng(2), backend=backend, dtype="float64")
    x = xp.asarray(np.random.default_rng(3).standard_normal((T, B, D)))
    r = np.random.default_rng(4).standard_normal((B, 2 * H))

    def run():
        for dropout in layer.dropouts:
            dropout.rng = np.random.default_rng(7)                     # the same masks every call
        return layer.forward(x, LENGTHS)

    loss = lambda: float((to_host(run()) * r).sum())                   # noqa: E731
    run()
    d_x = layer.backward(xp.asarray(r))
    check_gradients(loss, {**layer.params, "x": x}, {**layer.grads, "x": d_x}, rtol=1e-5, atol=1e-7)


MODEL_CASES = {  # every model of the lecture's architectures, built with a gated cell: (model, inputs, output shape)
    "classifier": lambda cell, be: (models.SequenceClassifier(11, 2, embed_dim=4, hidden_size=3, bidirectional=True,
                                                              pooling="last", cell=cell, backend=be, dtype="float64"),
                                    (np.array([[1, 2, 3], [4, 5, 0]]), np.array([2, 1, 1])), (3,)),
    "tagger": lambda cell, be: (models.SequenceTagger(11, 4, embed_dim=4, hidden_size=3, cell=cell, backend=be,
                                                      dtype="float64"), (np.array([[1, 2], [4, 0]]), np.array([2, 1])),
                                (2, 2, 4)),
    "language_model": lambda cell, be: (models.LanguageModel(11, embed_dim=4, hidden_size=3, num_layers=2, cell=cell,
                                                             backend=be, dtype="float64"),
                                        (np.array([[1, 2], [4, 3]]),), (2, 2, 11)),
    "encoder_decoder": lambda cell, be: (models.EncoderDecoder(11, 12, embed_dim=4, hidden_size=3, feed_context=True,
                                                               cell=cell, backend=be, dtype="float64"),
                                         (np.array([[1, 2], [4, 0]]), np.array([2, 1]),
                                          np.array([[1, 1], [5, 6], [7, 0]]), np.array([3, 2])), (3, 2, 12)),
    "forecaster": lambda cell, be: (models.Forecaster(1, hidden_size=3, num_layers=2, horizon=2, cell=cell, backend=be,
                                                      dtype="float64"),
                                    (np.random.default_rng(11).standard_normal((6, 3, 1)),), (3, 2)),
}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("name", MODEL_CASES)
def test_models_with_gated_cells_pass_the_gradient_checker(name, cell):
    """Each model with a GRU or LSTM (the encoder's C_n handed to the decoder too) passes the public checker, and
    its config records the cell so a checkpoint rebuilds it."""
    backend = backend_for("numpy", cell)
    model, inputs, shape = MODEL_CASES[name](cell, backend)
    assert model.config["cell"] == cell
    out = model.forward(*inputs)
    assert tuple(out.shape) == shape
    r = np.random.default_rng(5).standard_normal(shape)
    model.backward(backend.xp.asarray(r))
    check_gradients(lambda: float((to_host(model.forward(*inputs)) * r).sum()), model.params, model.grads,
                    max_checks=12, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_language_model_carries_state_and_generates(cell):
    """A stateful LSTM/GRU language model carries (A, C) across batches; generation and translation decode."""
    backend = backend_for("numpy", cell)
    lm = models.LanguageModel(11, embed_dim=4, hidden_size=3, cell=cell, stateful=True, backend=backend,
                              dtype="float64")
    lm.forward(np.array([[1, 2], [3, 4]]))
    carried = lm.state
    assert carried.shape == ((2, 1, 2, 3) if cell == "lstm" else (1, 2, 3))
    fresh = models.LanguageModel(11, embed_dim=4, hidden_size=3, cell=cell, backend=backend, dtype="float64")
    fresh.load_state_dict(lm.state_dict())
    ids = np.array([[5, 6], [7, 8]])
    np.testing.assert_allclose(to_host(lm.forward(ids)), to_host(fresh.forward(ids, None, carried)))
    assert len(lm.generate([1, 2], 5, temperature=0)) == 5
    translator = models.EncoderDecoder(11, 12, embed_dim=4, hidden_size=3, feed_context=True, cell=cell,
                                       backend=backend, dtype="float64")
    ids, scores = translator.translate(np.array([[1, 2], [4, 0]]), np.array([2, 1]), 1, 2, 6, beam_size=3)
    assert len(ids) == 2 and all(len(s) <= 6 for s in ids)
