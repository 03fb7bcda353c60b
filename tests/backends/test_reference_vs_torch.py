"""The NumPy reference against torch.nn.RNN with packed sequences: forward and every gradient."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnbackends.interop import from_torch_rnn_params, to_torch_rnn_params
from rnnbackends.reference import ReferenceBackend
from rnnbackends.testing import make_case

torch = pytest.importorskip("torch", reason="PyTorch parity tests need torch (pip install torch==2.13.0)")


def torch_rnn(x, a0, w_x, w_a, b_a, lengths, nonlinearity, d_a, d_a_n):
    """torch.nn.RNN over packed sequences with our weights; returns a, a_n and the five gradients."""
    T, B, D = x.shape
    H = w_a.shape[0]
    dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    rnn = torch.nn.RNN(D, H, nonlinearity=nonlinearity, dtype=dtype)
    state = {k: torch.from_numpy(v) for k, v in to_torch_rnn_params(w_x, w_a, b_a).items()}
    rnn.load_state_dict(state)
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    h0 = torch.from_numpy(a0.copy())[None].requires_grad_()
    packed = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.from_numpy(lengths), enforce_sorted=False)
    out, h_n = rnn(packed, h0)
    a, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    loss = (a * torch.from_numpy(d_a)).sum() + (h_n[0] * torch.from_numpy(d_a_n)).sum()
    loss.backward()
    d_w_x, d_w_a, d_b_a = from_torch_rnn_params({k: p.grad for k, p in rnn.named_parameters()})
    d_b_a = rnn.bias_ih_l0.grad.numpy()  # both biases see the same gradient; b_A is one of them
    return (a.detach().numpy(), h_n[0].detach().numpy(),
            (x_t.grad.numpy(), h0.grad[0].numpy(), d_w_x, d_w_a, d_b_a))


def assert_relative(name, got, want, tol):
    scale = max(np.abs(want).max(), 1e-12)
    err = np.abs(got - want).max() / scale
    assert err <= tol, f"{name}: max relative error {err:.3g} > {tol}"


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 12), B=st.integers(1, 6), D=st.integers(1, 7), H=st.integers(1, 20),
       nonlinearity=st.sampled_from(["tanh", "relu"]), dtype=st.sampled_from(["float32", "float64"]),
       seed=st.integers(0, 2**31 - 1))
def test_reference_matches_torch(T, B, D, H, nonlinearity, dtype, seed):
    """Random shapes, packed variable lengths, non-zero h0: float64 to 1e-9, float32 to 2e-4."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, B)
    lengths[rng.integers(B)] = T  # pack_padded_sequence needs one row of full length for total_length
    (x, a0, w_x, w_a, b_a), lengths = make_case(T, B, D, H, dtype, lengths=lengths, seed=seed)
    d_a = rng.standard_normal((T, B, H)).astype(dtype)
    d_a_n = rng.standard_normal((B, H)).astype(dtype)
    ref = ReferenceBackend()
    a, a_n, saved = ref.forward_sequence(x, a0, w_x, w_a, b_a, lengths=lengths, nonlinearity=nonlinearity)
    grads = ref.backward_sequence(saved, d_a, d_a_n)
    t_a, t_a_n, t_grads = torch_rnn(x, a0, w_x, w_a, b_a, lengths, nonlinearity, d_a, d_a_n)
    tol = 1e-9 if dtype == "float64" else 2e-4
    assert_relative("a", a, t_a, tol)
    assert_relative("a_n", a_n, t_a_n, tol)
    for name, g, t in zip(("d_x", "d_a0", "d_w_x", "d_w_a", "d_b_a"), grads, t_grads):
        assert_relative(name, g, t, tol)


def test_weights_convert_both_ways():
    """Ours -> torch state dict -> ours is the identity; torch's two biases add up to b_A."""
    (_, _, w_x, w_a, b_a), _ = make_case(2, 2, 3, 4, "float64")
    state = to_torch_rnn_params(w_x, w_a, b_a)
    rnn = torch.nn.RNN(3, 4, dtype=torch.float64)
    rnn.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    assert rnn.weight_ih_l0.shape == (4, 3) and rnn.weight_hh_l0.shape == (4, 4)
    back = from_torch_rnn_params(rnn.state_dict())
    for mine, theirs in zip((w_x, w_a, b_a), back):
        np.testing.assert_array_equal(mine, theirs)
    fresh = torch.nn.RNN(3, 4, dtype=torch.float64).state_dict()
    _, _, b = from_torch_rnn_params(fresh)
    np.testing.assert_array_equal(b, (fresh["bias_ih_l0"] + fresh["bias_hh_l0"]).numpy())
