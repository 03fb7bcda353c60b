"""The numba backend against torch.nn.RNN with packed sequences, on each of its kernel paths: A and every gradient."""
import numpy as np
import pytest
import rnnbackends_numba.backend as numba_backend

from rnnbackends.interop import from_torch_rnn_params, to_torch_rnn_params
from rnnbackends.testing import make_case, tolerance

pytest.importorskip("numba", reason="numba is not installed")
torch = pytest.importorskip("torch", reason="PyTorch parity tests need torch (pip install torch==2.13.0)")

# Thresholds that send small shapes down each path.
BLAS_NEVER = {"BLAS_STEP_MIN_H": 10**9, "BLAS_STEP_MIN_WORK_THREADED": 10**18, "BLAS_STEP_MIN_WORK_WIDE": 10**18}
SPLIT_NEVER = {"PARALLEL_MIN_WORK": 10**18}
PATHS = {"blocked": dict(BLAS_NEVER, **SPLIT_NEVER),
         "blocked-parallel": dict(BLAS_NEVER, PARALLEL_MIN_WORK=0),
         "blas-step": dict(SPLIT_NEVER, BLAS_STEP_MIN_H=0)}
PATHS["blas-step-transposed"] = dict(PATHS["blas-step"], TRANSPOSED_PRODUCT_MAX_B=10**9)
PATHS["blas-step"]["TRANSPOSED_PRODUCT_MAX_B"] = 0


@pytest.fixture(params=sorted(PATHS))
def numba_path(request, monkeypatch):
    """A NumbaBackend whose thresholds force one kernel path."""
    for name, value in PATHS[request.param].items():
        monkeypatch.setattr(numba_backend, name, value)
    monkeypatch.setattr(numba_backend.NumbaBackend, "blas_threads", lambda self: 1)   # rows split only then
    return numba_backend.NumbaBackend()


def torch_rnn(x, a0, w_x, w_a, b_a, lengths, nonlinearity, d_a, d_a_n):
    """torch.nn.RNN over packed sequences with our weights -> a, a_n and (d_x, d_a0, d_w_x, d_w_a, d_b_a)."""
    T, B, D = x.shape
    rnn = torch.nn.RNN(D, w_a.shape[0], nonlinearity=nonlinearity, dtype=getattr(torch, str(x.dtype)))
    rnn.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch_rnn_params(w_x, w_a, b_a).items()})
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    h0 = torch.from_numpy(a0.copy())[None].requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.from_numpy(lengths), enforce_sorted=False)
    out, h_n = rnn(packed, h0)
    a, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    ((a * torch.from_numpy(d_a)).sum() + (h_n[0] * torch.from_numpy(d_a_n)).sum()).backward()
    d_w_x, d_w_a, _ = from_torch_rnn_params({k: p.grad for k, p in rnn.named_parameters()})
    d_b_a = rnn.bias_ih_l0.grad.numpy()                     # both biases get dL/db_A
    return a.detach().numpy(), h_n[0].detach().numpy(), (x_t.grad.numpy(), h0.grad[0].numpy(), d_w_x, d_w_a, d_b_a)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("T, B, D, H", [(1, 1, 1, 1), (7, 9, 5, 10), (12, 6, 3, 33), (5, 6, 4, 70)])
def test_matches_torch_with_packed_lengths(numba_path, T, B, D, H, nonlinearity, dtype):
    """Lengths (one full, one 1), non-zero A_0, NaN in padded d_a: A, a_n, all gradients; H spans every tile kind."""
    rng = np.random.default_rng(T * 100 + B)
    lengths = rng.integers(1, T + 1, B)
    lengths[0], lengths[-1] = T, 1
    (x, a0, w_x, w_a, b_a), lengths = make_case(T, B, D, H, dtype, lengths=lengths, seed=B)
    d_a = rng.standard_normal((T, B, H)).astype(dtype)
    d_a_n = rng.standard_normal((B, H)).astype(dtype)
    want_a, want_a_n, want_grads = torch_rnn(x, a0, w_x, w_a, b_a, lengths, nonlinearity, d_a, d_a_n)
    d_a[np.arange(T)[:, None] >= lengths[None, :]] = np.nan    # padding: must be ignored
    a, a_n, saved = numba_path.forward_sequence(x, a0, w_x, w_a, b_a, lengths=lengths, nonlinearity=nonlinearity)
    grads = numba_path.backward_sequence(saved, d_a, d_a_n)
    for name, got, want in zip(("a", "a_n", "d_x", "d_a0", "d_w_x", "d_w_a", "d_b_a"),
                               (a, a_n) + tuple(grads), (want_a, want_a_n) + want_grads):
        assert got.dtype == np.dtype(dtype), name
        err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-12)
        assert err <= tolerance(dtype), f"{name}: max relative error {err:.3g} > {tolerance(dtype)}"
