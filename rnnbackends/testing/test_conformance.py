"""Conformance of one backend to the contract (version 2: the rnn, gru and lstm cells), against the NumPy reference,
and of the optional front-end kernels it declares, against the front-end's own xp code."""
from __future__ import annotations

import os

import numpy as np
import pytest

import rnnbackends
from rnnbackends.gradcheck import check_gradients
from rnnbackends.layers import embedding_gradient, kernel
from rnnbackends.losses import softmax_cross_entropy
from rnnbackends.optimizers import adam_update
from rnnbackends.testing import cell_call, make_case, make_cell_case, reference, to_host, tolerance


def _backend_names():
    requested = os.environ.get("RNNBACKENDS_TEST_BACKEND", "").strip()
    if requested:
        return [n.strip() for n in requested.split(",") if n.strip()]
    return [info.name for info in rnnbackends.list_backends()]


@pytest.fixture(scope="module", params=_backend_names())
def backend(request):
    """The backend under test; unknown or broken fails, unavailable here skips with its reason."""
    name = request.param
    rows = {info.name: info for info in rnnbackends.list_backends()}
    if name not in rows:
        pytest.fail(f"backend {name!r} is not installed; installed: {', '.join(sorted(rows))}")
    info = rows[name]
    if info.status == "broken":
        pytest.fail(f"backend {name!r} failed to load: {info.reason}")
    if not info.available:
        pytest.skip(f"backend {name!r} is unavailable here: {info.reason}")
    return rnnbackends.get_backend(name)


def _needs(backend, *capabilities):
    """Skip a check that needs a capability this (partial) backend does not declare."""
    missing = [c for c in capabilities if c is not None and c not in backend.capabilities]
    if missing:
        pytest.skip(f"backend {backend.name!r} does not declare {', '.join(missing)}")


def _put(backend, arrays):
    return tuple(backend.xp.asarray(a) for a in arrays)


def _close(name, got, want, dtype):
    """|got - want| <= tol·(|want| + max|want|), elementwise, on the host."""
    got, want = to_host(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    tol = tolerance(dtype)
    bound = tol * (np.abs(want) + np.abs(want).max(initial=0) + 1e-30)
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert np.all(err <= bound), (f"{name}: differs from the reference at {list(worst)}: "
                                 f"got {got[worst]!r}, expected {want[worst]!r} (rel. tol {tol})")


GRAD_NAMES = ("d_x", "d_a0", "d_w_x", "d_w_a", "d_b_a", "d_b_r")

CASES = [  # (T, B, D, H, lengths)
    pytest.param(1, 1, 1, 1, None, id="T1-B1-D1-H1"),
    pytest.param(1, 3, 4, 5, None, id="T1"),
    pytest.param(7, 1, 3, 4, None, id="B1"),
    pytest.param(6, 4, 3, 1, None, id="H1"),
    pytest.param(9, 5, 6, 8, [9, 1, 4, 9, 2], id="lengths-1-and-T"),
    pytest.param(5, 3, 2, 4, [1, 1, 5], id="padding-but-one"),
    pytest.param(12, 6, 10, 33, None, id="H33"),
    pytest.param(16, 8, 24, 64, [16, 3, 7, 16, 1, 12, 15, 9], id="H64-lengths"),
]


def _compare(backend, T, B, D, H, lengths, dtype, nonlinearity, seed=0):
    _needs(backend, dtype, nonlinearity, "lengths" if lengths is not None else None)
    (arrays, lengths) = make_case(T, B, D, H, dtype, lengths=lengths, seed=seed)
    ref = reference()
    a_ref, an_ref, saved_ref = ref.forward_sequence(*arrays, lengths=lengths, nonlinearity=nonlinearity)
    a, a_n, saved = backend.forward_sequence(*_put(backend, arrays), lengths=lengths, nonlinearity=nonlinearity)
    _close("a", a, a_ref, dtype)
    _close("a_n", a_n, an_ref, dtype)
    rng = np.random.default_rng(seed + 1)
    d_a = rng.standard_normal((T, B, H)).astype(dtype)
    d_a_n = rng.standard_normal((B, H)).astype(dtype)
    want = ref.backward_sequence(saved_ref, d_a, d_a_n)
    got = backend.backward_sequence(saved, *_put(backend, (d_a, d_a_n)))
    for name, g, w in zip(GRAD_NAMES, got, want):
        _close(name, g, w, dtype)
    want = ref.backward_sequence(saved_ref, d_a)  # without d_a_n
    got = backend.backward_sequence(saved, backend.xp.asarray(d_a))
    for name, g, w in zip(GRAD_NAMES, got, want):
        _close(name + " (no d_a_n)", g, w, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("T, B, D, H, lengths", CASES)
def test_matches_reference(backend, T, B, D, H, lengths, dtype, nonlinearity):
    """Forward states and all six gradients equal the reference's."""
    _compare(backend, T, B, D, H, lengths, dtype, nonlinearity)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("T, B, D, H, lengths", CASES[3:6])
def test_chain_methods_match_the_reference_chain(backend, T, B, D, H, lengths, dtype):
    """A chain backend's rnn_forward_chain / rnn_backward_chain alone equal rnnbackends.reference's."""
    from rnnbackends import reference as ref_chain
    from rnnbackends.chain import ChainBackend

    impl = backend.impl
    if not isinstance(impl, ChainBackend):
        pytest.skip(f"backend {backend.name!r} implements the contract calls itself, not rnnbackends.chain")
    _needs(backend, dtype, "tanh", "lengths" if lengths is not None else None)
    (x, a0, w_x, w_a, b_a), _ = make_case(T, B, D, H, dtype, seed=5)
    steps = np.full(B, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
    z = (x.reshape(T * B, D) @ w_x).reshape(T, B, H)                          # X_t·W_X
    a_ref, _ = ref_chain.rnn_forward_chain(z.copy(), a0, w_a, b_a, steps, "tanh")
    a, chain_saved = impl.rnn_forward_chain(*_put(backend, (z, a0, w_a, b_a)), steps, "tanh")
    _close("chain a", a, a_ref, dtype)
    rng = np.random.default_rng(6)
    d_a, d_a_n = rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)
    want = ref_chain.rnn_backward_chain(d_a, d_a_n, a_ref, w_a, steps, "tanh")
    got = impl.rnn_backward_chain(*_put(backend, (d_a, d_a_n)), a, backend.xp.asarray(w_a), steps, "tanh",
                                  chain_saved)
    for name, g, w in zip(("chain dz", "chain d_a0"), got, want):
        _close(name, g, w, dtype)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_long_sequence_stays_finite(backend, nonlinearity):
    """T = 1000: no overflow, no NaN, still equal to the reference (float32)."""
    _compare(backend, 1000, 3, 4, 16, [1000, 1, 517], "float32", nonlinearity, seed=3)
    _compare(backend, 1000, 2, 3, 8, None, "float64", nonlinearity, seed=4)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("lengths", [None, [6, 2, 1, 4]], ids=["full", "lengths"])
def test_finite_difference_gradients(backend, nonlinearity, lengths):
    """float64 central differences of L = Σ a·r + Σ a_n·s agree with the gradients."""
    _needs(backend, "float64", nonlinearity, "lengths" if lengths is not None else None)
    T, B, D, H = 6, 4, 3, 5
    arrays, lengths = make_case(T, B, D, H, "float64", lengths=lengths, seed=7)
    params = dict(zip(("x", "a0", "w_x", "w_a", "b_a"), _put(backend, arrays)))
    rng = np.random.default_rng(8)
    r, s = _put(backend, (rng.standard_normal((T, B, H)), rng.standard_normal((B, H))))
    xp = backend.xp

    def loss():
        a, a_n, _ = backend.forward_sequence(*params.values(), lengths=lengths, nonlinearity=nonlinearity)
        return float(xp.sum(a * r) + xp.sum(a_n * s))

    _, _, saved = backend.forward_sequence(*params.values(), lengths=lengths, nonlinearity=nonlinearity)
    grads = dict(zip(params, backend.backward_sequence(saved, r, s)))
    check_gradients(loss, params, grads, eps=1e-6, rtol=1e-6, atol=1e-9)


def test_padding_is_zero_and_a_n_is_last_valid_state(backend):
    """a[t, b] = 0 for t >= lengths[b]; a_n[b] = a[lengths[b] - 1, b]."""
    _needs(backend, "float64", "lengths")
    lengths = np.array([5, 1, 3, 2])
    arrays, lengths = make_case(5, 4, 3, 6, "float64", lengths=lengths, seed=11)
    a, a_n, _ = backend.forward_sequence(*_put(backend, arrays), lengths=lengths)
    a, a_n = to_host(a), to_host(a_n)
    for b, n in enumerate(lengths):
        assert np.all(a[n:, b] == 0), f"row {b}: states after its length {n} must be 0"
        assert np.array_equal(a_n[b], a[n - 1, b]), f"row {b}: a_n must be a[{n - 1}, {b}]"


def test_gradient_at_padding_is_ignored(backend):
    """d_a at padded steps (here NaN) does not touch any gradient."""
    _needs(backend, "float64", "lengths")
    lengths = np.array([4, 1, 2])
    arrays, lengths = make_case(4, 3, 2, 5, "float64", lengths=lengths, seed=12)
    _, _, saved = backend.forward_sequence(*_put(backend, arrays), lengths=lengths)
    d_a = np.random.default_rng(13).standard_normal((4, 3, 5))
    clean = backend.backward_sequence(saved, backend.xp.asarray(d_a))
    for b, n in enumerate(lengths):
        d_a[n:, b] = np.nan
    dirty = backend.backward_sequence(saved, backend.xp.asarray(d_a))
    for name, c, d in zip(GRAD_NAMES, clean, dirty):
        assert np.array_equal(to_host(c), to_host(d)), f"{name} changed when padded d_a changed"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_dtype_module_and_shapes(backend, dtype):
    """Outputs are arrays of the backend's xp, in the inputs' dtype, with the contract's shapes."""
    _needs(backend, dtype)
    T, B, D, H = 4, 3, 2, 5
    arrays, _ = make_case(T, B, D, H, dtype)
    a, a_n, saved = backend.forward_sequence(*_put(backend, arrays))
    grads = backend.backward_sequence(saved, backend.xp.ones((T, B, H), dtype=dtype))
    shapes = [(T, B, H), (B, H), (T, B, D), (B, H), (D, H), (H, H), (H,), (H,)]
    for name, out, shape in zip(("a", "a_n") + GRAD_NAMES, (a, a_n) + tuple(grads), shapes):
        assert isinstance(out, backend.xp.ndarray), f"{name} is {type(out)}, not {backend.xp.__name__}.ndarray"
        assert out.dtype == np.dtype(dtype), f"{name} has dtype {out.dtype}, expected {dtype}"
        assert tuple(out.shape) == shape, f"{name} has shape {tuple(out.shape)}, expected {shape}"


def test_inputs_are_not_modified(backend):
    """Neither forward nor backward writes to its arguments."""
    _needs(backend, "float64", "lengths")
    arrays, lengths = make_case(6, 3, 4, 5, "float64", lengths=[6, 2, 4], seed=14)
    inputs = _put(backend, arrays)
    before = [to_host(v).copy() for v in inputs]
    _, _, saved = backend.forward_sequence(*inputs, lengths=lengths)
    rng = np.random.default_rng(15)
    d_a, d_a_n = _put(backend, (rng.standard_normal((6, 3, 5)), rng.standard_normal((3, 5))))
    d_before = [to_host(d_a).copy(), to_host(d_a_n).copy()]
    backend.backward_sequence(saved, d_a, d_a_n)
    for name, arr, old in zip(("x", "a0", "w_x", "w_a", "b_a", "d_a", "d_a_n"),
                              tuple(inputs) + (d_a, d_a_n), before + d_before):
        assert np.array_equal(to_host(arr), old), f"{name} was modified"
    assert np.array_equal(lengths, [6, 2, 4]), "lengths was modified"


def test_repeated_calls_are_bit_identical(backend):
    """Same inputs, same outputs, bit for bit (no atomics, no racy reductions)."""
    _needs(backend, "float32", "lengths")
    arrays, lengths = make_case(20, 8, 16, 48, "float32", lengths=[20, 3, 11, 20, 1, 7, 19, 5], seed=16)
    inputs = _put(backend, arrays)
    d_a = backend.xp.asarray(np.random.default_rng(17).standard_normal((20, 8, 48)).astype("float32"))
    runs = []
    for _ in range(2):
        a, a_n, saved = backend.forward_sequence(*inputs, lengths=lengths)
        runs.append([to_host(v) for v in (a, a_n) + tuple(backend.backward_sequence(saved, d_a))])
    for name, first, second in zip(("a", "a_n") + GRAD_NAMES, *runs):
        assert np.array_equal(first, second), f"{name} differs between two identical calls"


def test_undeclared_capability_raises_not_implemented(backend):
    """A call the backend has not declared (here float16, and any missing option) raises NotImplementedError."""
    arrays, _ = make_case(3, 2, 2, 3, "float16")
    undeclared = [c for c in ("float16", "float32", "float64", "tanh", "relu", "lengths")
                  if c not in backend.capabilities]
    assert "float16" in undeclared or "float16" in backend.capabilities
    if "float16" not in backend.capabilities:
        with pytest.raises(NotImplementedError, match="float16"):
            backend.forward_sequence(*_put(backend, arrays))
    for capability in undeclared:
        dtype = capability if capability.startswith("float") else "float64"
        arrays, _ = make_case(3, 2, 2, 3, dtype)
        kwargs = {"nonlinearity": capability} if capability in ("tanh", "relu") else {}
        if capability == "lengths":
            kwargs = {"lengths": np.array([3, 1])}
        with pytest.raises(NotImplementedError):
            backend.forward_sequence(*_put(backend, arrays), **kwargs)


# -- contract version 2: the gated cells (and the simple cell with its recurrent bias b_R) ---------------------------
CELLS = ("rnn", "gru", "lstm")
CELL_CASES = [pytest.param(1, 1, 1, 1, None, id="T1-B1-D1-H1"), pytest.param(7, 1, 3, 4, None, id="B1"),
              pytest.param(6, 4, 3, 1, None, id="H1"), pytest.param(9, 5, 6, 8, [9, 1, 4, 9, 2], id="lengths-1-and-T"),
              pytest.param(16, 6, 10, 33, [16, 3, 7, 16, 1, 12], id="H33-lengths")]


def _states(cell, state):
    """A state value as a tuple of its parts: (A,) or (A, C)."""
    return tuple(state) if cell == "lstm" else (state,)


def _cell_forward(backend, cell, arrays, lengths):
    args, b_r = cell_call({k: backend.xp.asarray(v) for k, v in arrays.items()})
    return backend.forward_sequence(*args, lengths=lengths, cell=cell, b_r=b_r)


def _cell_backward(backend, cell, saved, d_a, d_state_n):
    xp = backend.xp
    d_state = None if d_state_n is None else (tuple(map(xp.asarray, d_state_n)) if cell == "lstm"
                                              else xp.asarray(d_state_n[0]))
    d_x, d_state0, *rest = backend.backward_sequence(saved, xp.asarray(d_a), d_state)
    return (d_x, *_states(cell, d_state0), *rest)


def _cell_grad_names(cell):
    return ("d_x", "d_a0") + (("d_c0",) if cell == "lstm" else ()) + ("d_w_x", "d_w_a", "d_b_a", "d_b_r")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("T, B, D, H, lengths", CELL_CASES)
@pytest.mark.parametrize("cell", CELLS)
def test_cell_matches_reference(backend, cell, T, B, D, H, lengths, dtype):
    """Each declared cell: states, final state(s) and all six gradients (with b_R) equal the reference's."""
    _needs(backend, cell, dtype, "tanh", "lengths" if lengths is not None else None)
    arrays, lengths = make_cell_case(cell, T, B, D, H, dtype, lengths=lengths, seed=T + H)
    ref = reference()
    want_a, want_state, saved_ref = _cell_forward(ref, cell, arrays, lengths)
    a, state_n, saved = _cell_forward(backend, cell, arrays, lengths)
    _close("a", a, want_a, dtype)
    for name, got, want in zip(("a_n", "c_n"), _states(cell, state_n), _states(cell, want_state)):
        _close(name, got, want, dtype)
    rng = np.random.default_rng(T * H + 1)
    d_a = rng.standard_normal((T, B, H)).astype(dtype)
    d_state_n = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2 if cell == "lstm" else 1))
    for given in (d_state_n, None):
        want = _cell_backward(ref, cell, saved_ref, d_a, given)
        got = _cell_backward(backend, cell, saved, d_a, given)
        for name, g, w in zip(_cell_grad_names(cell), got, want):
            _close(f"{name} ({'with' if given else 'without'} d_state_n)", g, w, dtype)


@pytest.mark.parametrize("lengths", [None, [6, 2, 1, 4]], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", CELLS)
def test_cell_finite_difference_gradients(backend, cell, lengths):
    """float64 central differences of L = Σ a·r + Σ state_n·s agree with all six gradients (and dC_0)."""
    _needs(backend, cell, "float64", "tanh", "lengths" if lengths is not None else None)
    T, B, D, H = 6, 4, 3, 5
    arrays, lengths = make_cell_case(cell, T, B, D, H, "float64", lengths=lengths, seed=21)
    params = {k: backend.xp.asarray(v) for k, v in arrays.items()}
    rng = np.random.default_rng(22)
    r = backend.xp.asarray(rng.standard_normal((T, B, H)))
    s = tuple(backend.xp.asarray(rng.standard_normal((B, H))) for _ in range(2 if cell == "lstm" else 1))
    xp = backend.xp

    def loss():
        a, state_n, _ = _cell_forward(backend, cell, params, lengths)
        return float(xp.sum(a * r) + sum(xp.sum(p * q) for p, q in zip(_states(cell, state_n), s)))

    _, _, saved = _cell_forward(backend, cell, params, lengths)
    grads = dict(zip(_cell_grad_names(cell), _cell_backward(backend, cell, saved, r, s)))
    names = {"x": "d_x", "a0": "d_a0", "c0": "d_c0", "w_x": "d_w_x", "w_a": "d_w_a", "b_a": "d_b_a", "b_r": "d_b_r"}
    check_gradients(loss, params, {k: grads[names[k]] for k in params}, eps=1e-6, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_state_is_frozen_past_each_length(backend, cell):
    """Past a row's length a[t, b] = 0 and the final state is the state at its last valid step, carried from a0."""
    _needs(backend, cell, "float64", "tanh", "lengths")
    arrays, lengths = make_cell_case(cell, 5, 3, 2, 4, "float64", lengths=[5, 1, 3], seed=23)
    a, state_n, _ = _cell_forward(backend, cell, arrays, lengths)
    a, a_n = to_host(a), to_host(_states(cell, state_n)[0])
    for b, n in enumerate(lengths):
        assert np.all(a[n:, b] == 0), f"{cell} row {b}: states after its length {n} must be 0"
        assert np.array_equal(a_n[b], a[n - 1, b]), f"{cell} row {b}: A_n must be a[{n - 1}, {b}]"
    first, _, _ = _cell_forward(backend, cell, {**arrays, "x": arrays["x"][:1]}, np.array([1, 1, 1]))
    _close(f"{cell}: A_n of a row of length 1 against one step", a_n[1], to_host(first)[0, 1], "float64")


@pytest.mark.parametrize("cell", ("gru", "lstm"))
def test_undeclared_cell_raises_not_implemented(backend, cell):
    """A backend that does not declare a cell refuses it with NotImplementedError, naming the cell."""
    if cell in backend.capabilities:
        pytest.skip(f"backend {backend.name!r} declares {cell}")
    arrays, _ = make_cell_case(cell, 3, 2, 2, 3, "float64")
    with pytest.raises(NotImplementedError, match=cell):
        _cell_forward(backend, cell, arrays, None)


# -- optional front-end kernels (rnnbackends.layers.FRONTEND_CAPABILITIES), each against the front-end's xp code ------

def _frontend_kernel(backend, name):
    """The backend's kernel ``name``; the check is skipped when the backend does not declare it."""
    _needs(backend, name)
    return kernel(backend, name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("N, K, masked", [(1, 1, False), (7, 5, True), (300, 67, True), (33, 4004, False)])
def test_softmax_cross_entropy_kernel_matches_the_front_end(backend, N, K, masked, dtype):
    """Loss and gradient equal the fused xp code's, huge logits and padding rows included; inputs untouched."""
    fused = _frontend_kernel(backend, "softmax_cross_entropy")
    rng = np.random.default_rng(N + K)
    logits = (rng.standard_normal((N, K)) * 4).astype(dtype)
    logits[0, 0] = 3e4 if dtype == "float64" else 80.0                      # a row a naive exp overflows in
    targets = rng.integers(0, K, N)
    valid = rng.random(N) < 0.7 if masked else np.ones(N, dtype=bool)
    weights = (valid / max(valid.sum(), 1)).astype(dtype)
    want_loss, want_d = softmax_cross_entropy(logits, targets, weights)
    args = _put(backend, (logits.copy(), targets, weights))
    loss, d_logits = fused(*args)
    assert loss == pytest.approx(want_loss, rel=tolerance(dtype), abs=tolerance(dtype))
    _close("d_logits", d_logits, want_d, dtype)
    np.testing.assert_array_equal(to_host(args[0]), logits)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding_idx", [0, None])
def test_embedding_backward_kernel_matches_the_front_end(backend, padding_idx, dtype):
    """dL/dweight equals the front-end's segment sums: repeated ids summed, the padding row zero."""
    backward = _frontend_kernel(backend, "embedding_backward")
    rng = np.random.default_rng(3)
    for N, V, D in ((1, 1, 1), (50, 7, 3), (2000, 300, 32)):
        ids = rng.integers(0, V, N)
        d_rows = rng.standard_normal((N, D)).astype(dtype)
        got = backward(*_put(backend, (ids, d_rows)), V, padding_idx)
        _close(f"d_weight N={N} V={V}", got, embedding_gradient(ids, d_rows, V, padding_idx), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_update_kernel_matches_the_front_end(backend, dtype):
    """Three in-place Adam steps (gradient scale, weight decay) leave param, m and v as the xp update does."""
    update = _frontend_kernel(backend, "adam_update")
    rng = np.random.default_rng(4)
    for shape in ((1,), (37, 5), (64, 300), "view"):
        if shape == "view":                                              # a transposed param, as interop loads
            shape = (6, 4)
            want = [rng.standard_normal((4, 6)).astype(dtype).T, np.zeros(shape, dtype), np.zeros(shape, dtype)]
            got = [backend.xp.asarray(want[0].T.copy()).T] + [backend.xp.zeros(shape, dtype) for _ in range(2)]
        else:
            want = [rng.standard_normal(shape).astype(dtype), np.zeros(shape, dtype), np.zeros(shape, dtype)]
            got = [backend.xp.asarray(a.copy()) for a in want]                  # its own arrays, updated alone
        scratch = backend.xp.empty_like(got[0])
        for t in range(1, 4):
            grad = rng.standard_normal(shape).astype(dtype)
            lr_t, eps_t = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t), 1e-8 * np.sqrt(1 - 0.999 ** t)
            constants = (lr_t, 0.9, 0.999, eps_t, 0.7, 0.999)
            adam_update(want[0], grad, want[1], want[2], np.empty_like(grad), *constants)
            update(got[0], backend.xp.asarray(grad), got[1], got[2], scratch, *constants)
        for name, g, w in zip(("param", "m", "v"), got, want):
            _close(f"{name} {shape}", g, w, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_kernel_matches_the_front_end(backend, dtype):
    """a·b equals xp.matmul's for the front-end's products: plain, a transposed view (Xᵀ·dY), b transposed (dY·Wᵀ)."""
    matmul = _frontend_kernel(backend, "matmul")
    rng = np.random.default_rng(5)
    for M, K, N in ((1, 1, 1), (7, 3, 5), (600, 64, 300), (64, 600, 1000)):
        a, b = rng.standard_normal((M, K)).astype(dtype), rng.standard_normal((K, N)).astype(dtype)
        for name, x, y in (("a·b", a, b), ("aᵀ·(a·b)", a.T, a @ b), ("(a·b)·bᵀ", a @ b, b.T)):
            got = matmul(backend.xp.asarray(x), backend.xp.asarray(y))
            _close(f"{name} M={M} K={K} N={N}", got, x.astype(np.float64) @ y.astype(np.float64), dtype)
