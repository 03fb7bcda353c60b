"""The reference GRU and LSTM chains, with the GEMMs around them, against torch.nn.GRU / nn.LSTM on packed
sequences: states, final states and every gradient (float64)."""
import numpy as np
import pytest

from rnnbackends import reference

torch = pytest.importorskip("torch", reason="PyTorch parity tests need torch (pip install torch==2.13.0)")


def case(cell, T, B, D, H, lengths, seed):
    """Random inputs, weights (w_x (D, G·H), w_a (H, G·H), b_a, b_r), upstream gradients; float64."""
    G = {"gru": 3, "lstm": 4}[cell]
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, D))
    w_x, w_a = rng.uniform(-bound, bound, (D, G * H)), rng.uniform(-bound, bound, (H, G * H))
    b_a, b_r = rng.uniform(-bound, bound, G * H), rng.uniform(-bound, bound, G * H)
    a0, c0 = rng.uniform(-0.5, 0.5, (B, H)), rng.uniform(-0.5, 0.5, (B, H))
    d_a, d_a_n, d_c_n = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    return x, w_x, w_a, b_a, b_r, a0, c0, np.asarray(lengths, dtype=np.int64), d_a, d_a_n, d_c_n


def ours(chains, cell, x, w_x, w_a, b_a, b_r, a0, c0, steps, d_a, d_a_n, d_c_n):
    """Forward and backward of ``chains``' GRU/LSTM chain functions (rnnbackends.reference, or a chain backend's
    methods of the same names) with the all-steps GEMMs around them."""
    T, B, D = x.shape
    H = a0.shape[1]
    z = (x.reshape(T * B, D) @ w_x).reshape(T, B, -1)                    # X_t·W_X for all steps
    if cell == "gru":
        a, saved = chains.gru_forward_chain(z, a0, w_a, b_a, b_r, steps)
        c_n = d_c0 = None
        dz_x, dz_r, d_a0 = chains.gru_backward_chain(d_a, d_a_n, a, a0, w_a, steps, saved)
    else:
        a, c_n, saved = chains.lstm_forward_chain(z, a0, c0, w_a, b_a, b_r, steps)
        dz_x, dz_r, d_a0, d_c0 = chains.lstm_backward_chain(d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, saved)
    a_n = a[steps - 1, np.arange(B)]
    a_prev = np.concatenate([a0[None], a[:-1]]).reshape(T * B, H)        # A_{t-1} (padding rows have dZ = 0)
    grads = {"d_x": (dz_x.reshape(T * B, -1) @ w_x.T).reshape(T, B, D), "d_a0": d_a0,
             "d_w_x": x.reshape(T * B, D).T @ dz_x.reshape(T * B, -1), "d_b_a": dz_x.sum((0, 1)),
             "d_w_a": a_prev.T @ dz_r.reshape(T * B, -1), "d_b_r": dz_r.sum((0, 1)), "d_c0": d_c0}
    return a, a_n, c_n, grads


def theirs(cell, x, w_x, w_a, b_a, b_r, a0, c0, steps, d_a, d_a_n, d_c_n):
    """The same through torch.nn.GRU / nn.LSTM over packed sequences."""
    T, B, D = x.shape
    H = a0.shape[1]
    module = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(D, H, dtype=torch.float64)
    module.load_state_dict({"weight_ih_l0": torch.from_numpy(w_x.T.copy()),
                            "weight_hh_l0": torch.from_numpy(w_a.T.copy()),
                            "bias_ih_l0": torch.from_numpy(b_a), "bias_hh_l0": torch.from_numpy(b_r)})
    x_t = torch.from_numpy(x).requires_grad_()
    h0 = torch.from_numpy(a0)[None].requires_grad_()
    c0_t = torch.from_numpy(c0)[None].requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.from_numpy(steps), enforce_sorted=False)
    out, state = module(packed, h0 if cell == "gru" else (h0, c0_t))
    h_n, c_n = (state, None) if cell == "gru" else state
    a, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    loss = (a * torch.from_numpy(d_a)).sum() + (h_n[0] * torch.from_numpy(d_a_n)).sum()
    if c_n is not None:
        loss = loss + (c_n[0] * torch.from_numpy(d_c_n)).sum()
    loss.backward()
    grads = {"d_x": x_t.grad, "d_a0": h0.grad[0], "d_w_x": module.weight_ih_l0.grad.T,
             "d_w_a": module.weight_hh_l0.grad.T, "d_b_a": module.bias_ih_l0.grad, "d_b_r": module.bias_hh_l0.grad,
             "d_c0": None if c_n is None else c0_t.grad[0]}
    as_np = lambda v: None if v is None else v.detach().numpy()          # noqa: E731
    return as_np(a), as_np(h_n[0]), as_np(None if c_n is None else c_n[0]), {k: as_np(v) for k, v in grads.items()}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("T, B, D, H, lengths", [(1, 1, 1, 1, [1]), (6, 4, 3, 5, [6, 2, 1, 4]),
                                                   (9, 3, 7, 8, [9, 9, 9]), (12, 5, 4, 16, [3, 12, 7, 1, 10])])
def test_reference_cells_match_torch(cell, T, B, D, H, lengths):
    """a, A_n (and C_n), and d_x, dA_0 (dC_0), dW_X, dW_A, db_A, db_R equal PyTorch's to 1e-10."""
    assert_matches_torch(reference, cell, T, B, D, H, lengths)


def assert_matches_torch(chains, cell, T, B, D, H, lengths):
    """``chains``' cell through ``ours`` against ``theirs`` on one random case: states to 1e-10, gradients 1e-9."""
    args = case(cell, T, B, D, H, lengths, seed=T * 31 + H)
    a, a_n, c_n, grads = ours(chains, cell, *args)
    want_a, want_a_n, want_c_n, want = theirs(cell, *args)
    np.testing.assert_allclose(a, want_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a_n, want_a_n, rtol=1e-10, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, want_c_n, rtol=1e-10, atol=1e-12)
    for name, value in grads.items():
        if value is not None:
            np.testing.assert_allclose(value, want[name], rtol=1e-9, atol=1e-11, err_msg=name)
