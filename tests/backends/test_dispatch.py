"""The dispatch layer's checks: one clear error naming the argument, the shape or dtype, and the fix."""
import numpy as np
import pytest

import rnnbackends
from rnnbackends.testing import make_case


@pytest.fixture
def numpy_backend():
    return rnnbackends.get_backend("numpy")


@pytest.fixture
def case():
    arrays, _ = make_case(5, 3, 4, 6, "float64")
    return dict(zip(("x", "a0", "w_x", "w_a", "b_a"), arrays))


def call(backend, case, **changes):
    args = {**case, **{k: v for k, v in changes.items() if k in case}}
    kwargs = {k: v for k, v in changes.items() if k not in case}
    return backend.forward_sequence(args["x"], args["a0"], args["w_x"], args["w_a"], args["b_a"], **kwargs)


@pytest.mark.parametrize("name, bad, error, pattern", [
    ("x", np.zeros((5, 3)), ValueError, r"x must be 3-D \(T, B, D\), got shape \(5, 3\)"),
    ("a0", np.zeros((3, 5)), ValueError, r"a0 must have shape \(B, H\) = \(3, 6\).*got \(3, 5\)"),
    ("w_a", np.zeros((6, 5)), ValueError, r"w_a must have shape \(H, H\) = \(6, 6\).*got \(6, 5\)"),
    ("b_a", np.zeros((1, 6)), ValueError, r"b_a must be 1-D \(G·H,\), got shape \(1, 6\)"),
    ("b_a", np.zeros(7), ValueError, r"b_a must have shape \(H,\) = \(6,\).*got \(7,\)"),
    ("w_x", np.zeros((4, 6), np.float32), TypeError, r"w_x has dtype float32 but x has float64"),
    ("x", np.zeros((5, 3, 4), np.int64), TypeError, r"x has dtype int64.*float32 or float64"),
    ("a0", [[0.0] * 6] * 3, TypeError, r"a0 must be a numpy.ndarray.*got builtins.list.*xp.asarray\(a0\)"),
    ("w_x", np.zeros((5, 6)), ValueError, r"w_x must have shape \(D, H\) = \(4, 6\) \(D from x\), got \(5, 6\)"),
    ("x", np.zeros((0, 3, 4)), ValueError, r"x must hold at least one step and one sequence.*\(0, 3, 4\)"),
    ("x", np.zeros((5, 0, 4)), ValueError, r"x must hold at least one step and one sequence.*\(5, 0, 4\)"),
])
def test_forward_argument_errors(numpy_backend, case, name, bad, error, pattern):
    with pytest.raises(error, match=pattern):
        call(numpy_backend, case, **{name: bad})


@pytest.mark.parametrize("lengths, error, pattern", [
    (np.array([5, 0, 2]), ValueError, r"1 <= lengths\[b\] <= T = 5, got min 0"),
    (np.array([5, 6, 2]), ValueError, r"got min 2 max 6"),
    (np.array([5, 2]), ValueError, r"lengths must have shape \(B,\) = \(3,\)"),
    (np.array([5.0, 1.0, 2.0]), TypeError, r"lengths must hold integers, got dtype float64"),
])
def test_lengths_errors(numpy_backend, case, lengths, error, pattern):
    with pytest.raises(error, match=pattern):
        call(numpy_backend, case, lengths=lengths)


def test_lengths_accept_lists_and_are_not_modified(numpy_backend, case):
    lengths = [5, 1, 3]
    a, _, _ = call(numpy_backend, case, lengths=lengths)
    assert lengths == [5, 1, 3] and np.all(a[1:, 1] == 0)


def test_unknown_nonlinearity(numpy_backend, case):
    with pytest.raises(ValueError, match=r"nonlinearity must be one of \('tanh', 'relu'\), got 'sigmoid'"):
        call(numpy_backend, case, nonlinearity="sigmoid")


def test_backward_checks(numpy_backend, case):
    a, _, saved = call(numpy_backend, case)
    with pytest.raises(ValueError, match=r"d_a must have shape \(T, B, H\) = \(5, 3, 6\)"):
        numpy_backend.backward_sequence(saved, np.zeros((5, 3, 7)))
    with pytest.raises(ValueError, match=r"d_a_n must have shape \(B, H\) = \(3, 6\)"):
        numpy_backend.backward_sequence(saved, np.zeros_like(a), np.zeros((3, 7)))
    with pytest.raises(TypeError, match=r"d_a has dtype float32 but forward's inputs has float64"):
        numpy_backend.backward_sequence(saved, np.zeros(a.shape, np.float32))
    with pytest.raises(TypeError, match="third value returned by forward_sequence"):
        numpy_backend.backward_sequence((1, 2), np.zeros_like(a))


def test_saved_from_another_backend_is_refused(numpy_backend, case):
    other = next((r.name for r in rnnbackends.list_backends() if r.available and r.name != "numpy"), None)
    if other is None:
        pytest.skip("needs a second available backend")
    _, _, saved = call(numpy_backend, case)
    with pytest.raises(TypeError, match="saved comes from backend 'numpy'"):
        rnnbackends.get_backend(other).backward_sequence(saved, np.zeros((5, 3, 6)))


def test_check_finite_option(numpy_backend, case, monkeypatch):
    x = case["x"].copy()
    x[0, 0, 0] = np.nan
    call(numpy_backend, case, x=x)  # off by default: NaN flows through
    monkeypatch.setenv("RNNBACKENDS_CHECK_FINITE", "1")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        call(numpy_backend, case, x=x)


def test_non_contiguous_inputs_are_accepted(numpy_backend, case):
    ref = call(numpy_backend, case)[0]
    w_a_f = np.asfortranarray(case["w_a"])
    x_strided = np.concatenate([case["x"], case["x"]], axis=2)[:, :, ::2]
    x_strided[...] = case["x"]
    np.testing.assert_array_equal(call(numpy_backend, case, w_a=w_a_f, x=x_strided)[0], ref)


@pytest.mark.parametrize("name", [123, 1.5, ["numpy"]])
def test_backend_name_must_be_a_string(name):
    with pytest.raises(TypeError, match=r"backend must be a name such as 'numba'"):
        rnnbackends.get_backend(name)


def test_wrong_case_backend_name_suggests_the_installed_name(monkeypatch):
    monkeypatch.setenv("RNNBACKENDS_BACKEND", "NUMPY")
    with pytest.raises(rnnbackends.UnknownBackendError, match=r"did you mean 'numpy'\?"):
        rnnbackends.get_backend()


@pytest.fixture
def lstm_case():
    from rnnbackends.testing import make_cell_case

    arrays, _ = make_cell_case("lstm", 5, 3, 4, 6, "float64")
    return arrays


def test_v2_cell_argument_errors(numpy_backend, case, lstm_case):
    """Unknown cells, gate-count mismatches, a single state for an LSTM, a gated cell with relu: named errors."""
    with pytest.raises(ValueError, match=r"cell must be one of 'rnn', 'gru', 'lstm', got 'tree'"):
        call(numpy_backend, case, cell="tree")
    with pytest.raises(ValueError, match=r"w_x must have shape \(D, 3·H\) for cell='gru'"):
        call(numpy_backend, case, cell="gru", w_x=np.zeros((4, 7)))
    x, a0, c0, w_x, w_a, b_a = (lstm_case[k] for k in ("x", "a0", "c0", "w_x", "w_a", "b_a"))
    with pytest.raises(TypeError, match=r"state0 of an LSTM is the pair \(a0, c0\)"):
        numpy_backend.forward_sequence(x, a0, w_x, w_a, b_a, cell="lstm")
    with pytest.raises(ValueError, match=r"c0 must have shape \(B, H\) = \(3, 6\)"):
        numpy_backend.forward_sequence(x, (a0, c0[:, :5]), w_x, w_a, b_a, cell="lstm")
    with pytest.raises(ValueError, match=r"b_r must have shape \(4·H,\) = \(24,\)"):
        numpy_backend.forward_sequence(x, (a0, c0), w_x, w_a, b_a, cell="lstm", b_r=np.zeros(6))
    with pytest.raises(ValueError, match=r"nonlinearity applies to cell='rnn' only"):
        numpy_backend.forward_sequence(x, (a0, c0), w_x, w_a, b_a, cell="lstm", nonlinearity="relu")
    with pytest.raises(TypeError, match=r"state0 of cell='rnn' is one array a0"):
        call(numpy_backend, case, a0=(case["a0"], case["a0"]))
