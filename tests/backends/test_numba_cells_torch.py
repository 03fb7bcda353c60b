"""The numba backend's GRU and LSTM chains, with the GEMMs around them, against torch.nn.GRU / nn.LSTM on packed
sequences on each kernel path: states, final states and every gradient (float64)."""
import numpy as np
import pytest

from tests.backends.test_numba_cells import backend_on

pytest.importorskip("numba", reason="numba is not installed")
pytest.importorskip("torch", reason="PyTorch parity tests need torch (pip install torch==2.13.0)")
from tests.backends.test_reference_cells_vs_torch import case, theirs  # noqa: E402  (needs torch)


def ours(backend, cell, x, w_x, w_a, b_a, b_r, a0, c0, steps, d_a, d_a_n, d_c_n):
    """Forward and backward of the backend's chain methods with the all-steps GEMMs around them."""
    T, B, D = x.shape
    H = a0.shape[1]
    z = (x.reshape(T * B, D) @ w_x).reshape(T, B, -1)                    # X_t·W_X for all steps
    if cell == "gru":
        a, saved = backend.gru_forward_chain(z, a0, w_a, b_a, b_r, steps)
        c_n = d_c0 = None
        dz_x, dz_r, d_a0 = backend.gru_backward_chain(d_a, d_a_n, a, a0, w_a, steps, saved)
    else:
        a, c_n, saved = backend.lstm_forward_chain(z, a0, c0, w_a, b_a, b_r, steps)
        dz_x, dz_r, d_a0, d_c0 = backend.lstm_backward_chain(d_a, d_a_n, d_c_n, a, a0, c0, w_a, steps, saved)
    a_n = a[steps - 1, np.arange(B)]
    a_prev = np.concatenate([a0[None], a[:-1]]).reshape(T * B, H)        # A_{t-1} (padding rows have dZ = 0)
    grads = {"d_x": (dz_x.reshape(T * B, -1) @ w_x.T).reshape(T, B, D), "d_a0": d_a0,
             "d_w_x": x.reshape(T * B, D).T @ dz_x.reshape(T * B, -1), "d_b_a": dz_x.sum((0, 1)),
             "d_w_a": a_prev.T @ dz_r.reshape(T * B, -1), "d_b_r": dz_r.sum((0, 1)), "d_c0": d_c0}
    return a, a_n, c_n, grads


@pytest.mark.parametrize("path", ["blocked", "blocked-parallel", "blas-step"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("T, B, D, H, lengths", [(1, 1, 1, 1, [1]), (12, 9, 4, 16, [3, 12, 7, 1, 10, 12, 2, 5, 12])])
def test_numba_cells_match_torch(T, B, D, H, lengths, cell, path, monkeypatch):
    """a, A_n (and C_n), and d_x, dA_0 (dC_0), dW_X, dW_A, db_A, db_R equal PyTorch's to 1e-10."""
    args = case(cell, T, B, D, H, lengths, seed=T * 31 + H)
    a, a_n, c_n, grads = ours(backend_on(path, monkeypatch), cell, *args)
    want_a, want_a_n, want_c_n, want = theirs(cell, *args)
    np.testing.assert_allclose(a, want_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a_n, want_a_n, rtol=1e-10, atol=1e-12)
    if cell == "lstm":
        np.testing.assert_allclose(c_n, want_c_n, rtol=1e-10, atol=1e-12)
    for name, value in grads.items():
        if value is not None:
            np.testing.assert_allclose(value, want[name], rtol=1e-9, atol=1e-11, err_msg=name)
