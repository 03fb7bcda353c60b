"""Properties every available backend keeps on random shapes (hypothesis), for the rnn (tanh, relu), GRU and LSTM cells.

- strided, transposed and Fortran-ordered views give the answer of contiguous arrays;
- permuting the batch permutes the outputs (rows are independent);
- whatever lies past a row's length (inputs, and output gradients) changes nothing for that row;
- one step equals one cell call: the sequence run one step at a time, and the cell written out in NumPy.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnbackends
from rnnbackends.testing import cell_call, make_cell_case, to_host, tolerance

BACKENDS = [info.name for info in rnnbackends.list_backends() if info.available]
CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def cases(draw):
    """(cell, nonlinearity, dtype, arrays, lengths): T ≤ 6, B ≤ 5, D ≤ 4, H ≤ 5, every row at least one step."""
    cell, nonlinearity = draw(st.sampled_from(CELLS))
    dtype = draw(st.sampled_from(["float64", "float32"]))
    T, B = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    D, H = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    arrays, lengths = make_cell_case(cell, T, B, D, H, dtype, lengths=lengths, seed=draw(st.integers(0, 2**16)))
    return cell, nonlinearity, dtype, arrays, lengths


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return rnnbackends.get_backend(request.param)


def run(backend, cell, nonlinearity, arrays, lengths):
    """Forward on the host: (a (T,B,H), the final state as a tuple of (B,H) arrays)."""
    args, b_r = cell_call(arrays)
    xp = backend.xp
    state0 = tuple(xp.asarray(s) for s in args[1]) if cell == "lstm" else xp.asarray(args[1])
    a, state_n, _ = backend.forward_sequence(xp.asarray(args[0]), state0, *(xp.asarray(v) for v in args[2:]),
                                             lengths=lengths, nonlinearity=nonlinearity, cell=cell,
                                             b_r=xp.asarray(b_r))
    return to_host(a), tuple(to_host(s) for s in (state_n if cell == "lstm" else (state_n,)))


def gradients(backend, cell, nonlinearity, arrays, lengths, d_a):
    """Backward on the host for output gradient ``d_a`` (T,B,H): (d_x, d_w_x, d_w_a, d_b_a, d_b_r)."""
    args, b_r = cell_call(arrays)
    xp = backend.xp
    state0 = tuple(xp.asarray(s) for s in args[1]) if cell == "lstm" else xp.asarray(args[1])
    _, _, saved = backend.forward_sequence(xp.asarray(args[0]), state0, *(xp.asarray(v) for v in args[2:]),
                                           lengths=lengths, nonlinearity=nonlinearity, cell=cell, b_r=xp.asarray(b_r))
    d_x, _, d_w_x, d_w_a, d_b_a, d_b_r = backend.backward_sequence(saved, xp.asarray(d_a))
    return [to_host(g) for g in (d_x, d_w_x, d_w_a, d_b_a, d_b_r)]


def close(got, want, dtype, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    bound = tolerance(dtype) * (np.abs(want) + np.abs(want).max(initial=0) + 1e-30)
    assert got.shape == want.shape and np.all(np.abs(got - want) <= bound), what


def strided(v):
    """A view of ``v``'s values with every stride doubled (every other element of a bigger array)."""
    big = np.zeros(tuple(2 * n for n in v.shape), dtype=v.dtype)
    view = big[tuple(slice(None, None, 2) for _ in v.shape)]
    view[...] = v
    return view


def transposed(v):
    """A view of ``v``'s values whose axes run in reverse memory order (a transpose of a contiguous array)."""
    return np.ascontiguousarray(v.T).T


@SETTINGS
@given(case=cases(), layout=st.sampled_from([strided, transposed, np.asfortranarray]))
def test_views_give_the_contiguous_answer(backend, case, layout):
    cell, nonlinearity, dtype, arrays, lengths = case
    want = run(backend, cell, nonlinearity, arrays, lengths)
    views = {k: layout(v) for k, v in arrays.items()}
    assert any(not v.flags.c_contiguous for v in views.values()) or all(v.ndim < 2 or 1 in v.shape
                                                                       for v in views.values())
    got = run(backend, cell, nonlinearity, views, lengths)
    for g, w in zip((got[0], *got[1]), (want[0], *want[1]), strict=True):
        close(g, w, dtype, f"{layout.__name__} views differ from contiguous arrays")


@SETTINGS
@given(case=cases(), data=st.data())
def test_permuting_the_batch_permutes_the_outputs(backend, case, data):
    cell, nonlinearity, dtype, arrays, lengths = case
    B = arrays["x"].shape[1]
    order = np.array(data.draw(st.permutations(range(B))), dtype=np.int64)
    shuffled = {k: (v[:, order] if k == "x" else v[order] if k in ("a0", "c0") else v) for k, v in arrays.items()}
    a, state = run(backend, cell, nonlinearity, arrays, lengths)
    a_p, state_p = run(backend, cell, nonlinearity, shuffled, lengths[order])
    close(a_p, a[:, order], dtype, "a of the permuted batch")
    for s_p, s in zip(state_p, state, strict=True):
        close(s_p, s[order], dtype, "final state of the permuted batch")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")     # the garbage, masked out, may overflow
@SETTINGS
@given(case=cases(), seed=st.integers(0, 2**16))
def test_padding_past_a_rows_length_changes_nothing(backend, case, seed):
    cell, nonlinearity, dtype, arrays, lengths = case
    T, B, _ = arrays["x"].shape
    H = arrays["a0"].shape[1]
    rng = np.random.default_rng(seed)
    padding = np.arange(T)[:, None] >= lengths[None, :]                               # (T, B) past each length
    garbage = dict(arrays, x=np.where(padding[:, :, None], rng.normal(0, 1e3, arrays["x"].shape),
                                      arrays["x"]).astype(dtype))
    a, state = run(backend, cell, nonlinearity, arrays, lengths)
    a_g, state_g = run(backend, cell, nonlinearity, garbage, lengths)
    np.testing.assert_array_equal(a_g, a)
    assert not a[padding].any()                                                       # A_t = 0 past the length
    for s_g, s in zip(state_g, state, strict=True):
        np.testing.assert_array_equal(s_g, s)
    d_a = rng.normal(size=(T, B, H)).astype(dtype)
    d_a_g = np.where(padding[:, :, None], rng.normal(0, 1e3, d_a.shape), d_a).astype(dtype)
    want = gradients(backend, cell, nonlinearity, arrays, lengths, d_a)
    got = gradients(backend, cell, nonlinearity, garbage, lengths, d_a_g)
    assert not got[0][padding].any()                                                  # no gradient into padding
    for name, g, w in zip(("d_x", "d_w_x", "d_w_a", "d_b_a", "d_b_r"), got, want, strict=True):
        close(g, w, dtype, f"{name} changed by what lies past the lengths")


def cell_step(cell, nonlinearity, x_t, state, w_x, w_a, b_a, b_r):
    """One step of the cell written out in float64 NumPy (PyTorch's gate orders): the new state tuple."""
    sigmoid = lambda z: 1 / (1 + np.exp(-z))                                          # noqa: E731
    a_prev = state[0]
    z_x, z_r = x_t @ w_x + b_a, a_prev @ w_a + b_r                                    # (B, G·H) each
    H = a_prev.shape[1]
    if cell == "rnn":
        z = z_x + z_r
        return (np.tanh(z) if nonlinearity == "tanh" else np.maximum(z, 0),)
    if cell == "gru":
        r, u = sigmoid(z_x[:, :H] + z_r[:, :H]), sigmoid(z_x[:, H:2 * H] + z_r[:, H:2 * H])
        n = np.tanh(z_x[:, 2 * H:] + r * z_r[:, 2 * H:])
        return ((1 - u) * n + u * a_prev,)
    z = z_x + z_r
    i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
    c = f * state[1] + i * g
    return o * np.tanh(c), c


@SETTINGS
@given(case=cases())
def test_one_step_at_a_time_equals_the_sequence_and_the_cell(backend, case):
    cell, nonlinearity, dtype, arrays, _ = case
    T = arrays["x"].shape[0]
    a, state = run(backend, cell, nonlinearity, arrays, None)
    step_state = (arrays["a0"], arrays["c0"]) if cell == "lstm" else (arrays["a0"],)
    by_hand = tuple(s.astype(np.float64) for s in step_state)
    weights = [arrays[k].astype(np.float64) for k in ("w_x", "w_a", "b_a", "b_r")]
    for t in range(T):
        one = dict(arrays, x=arrays["x"][t:t + 1], a0=step_state[0])
        if cell == "lstm":
            one["c0"] = step_state[1]
        a_t, step_state = run(backend, cell, nonlinearity, one, None)
        by_hand = cell_step(cell, nonlinearity, arrays["x"][t].astype(np.float64), by_hand, *weights)
        close(a_t[0], a[t], dtype, f"step {t} alone differs from the sequence")
        close(a_t[0], by_hand[0], dtype, f"step {t} differs from the cell written out")
    for s, s_seq, s_hand in zip(step_state, state, by_hand, strict=True):
        close(s, s_seq, dtype, "final state step by step")
        close(s, s_hand, dtype, "final state of the cell written out")
