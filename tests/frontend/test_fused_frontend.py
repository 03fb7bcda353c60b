"""The step's front-end: fused softmax cross-entropy, in-place optimisers, and backend kernels with their fallback."""
import tracemalloc

import numpy as np
import pytest

import rnnbackends
from rnnbackends.data import Batch
from rnnbackends.layers import FRONTEND_CAPABILITIES, Embedding, computing_on, embedding_gradient, kernel
from rnnbackends.losses import categorical_cross_entropy, softmax_cross_entropy
from rnnbackends.models import LanguageModel
from rnnbackends.optimizers import SGD, Adagrad, Adam, RMSprop, clip_grad_norm
from rnnbackends.training import train_step


def straightforward_cross_entropy(logits, targets, mask=None):
    """The textbook formulas: log-softmax, pick, mean over valid entries; gradient (softmax - onehot)/n."""
    K = logits.shape[-1]
    z = logits.reshape(-1, K).astype(np.float64)
    y = targets.reshape(-1)
    w = np.ones(len(y)) if mask is None else mask.reshape(-1).astype(np.float64)
    w = w / max(w.sum(), 1.0)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    loss = -(w * log_p[np.arange(len(y)), y]).sum()
    d = (np.exp(log_p) - np.eye(K)[y]) * w[:, None]
    return loss, d.reshape(logits.shape)


@pytest.mark.parametrize("masked", [False, True])
def test_fused_cross_entropy_matches_the_textbook_value_and_gradient(masked):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 5, 11)) * 3
    targets = rng.integers(0, 11, (7, 5))
    mask = rng.random((7, 5)) < 0.7 if masked else None
    loss, d_logits = categorical_cross_entropy(logits, targets, mask)
    want_loss, want_d = straightforward_cross_entropy(logits, targets, mask)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(d_logits, want_d, rtol=1e-10, atol=1e-15)
    if masked:
        assert not d_logits[~mask].any()                                    # padding gets no gradient


def test_fused_cross_entropy_gradient_is_the_finite_difference_of_its_value():
    rng = np.random.default_rng(1)
    logits, targets = rng.standard_normal((6, 4, 9)), rng.integers(0, 9, (6, 4))
    mask = rng.random((6, 4)) < 0.8
    _, d_logits = categorical_cross_entropy(logits, targets, mask)
    eps = 1e-6
    for index in [(0, 0, 0), (2, 1, 5), (5, 3, 8), (3, 2, int(targets[3, 2]))]:
        shifted = logits.copy()
        shifted[index] += eps
        up = categorical_cross_entropy(shifted, targets, mask)[0]
        shifted[index] -= 2 * eps
        down = categorical_cross_entropy(shifted, targets, mask)[0]
        assert d_logits[index] == pytest.approx((up - down) / (2 * eps), abs=1e-8)


def test_fused_cross_entropy_is_stable_for_huge_logits_and_keeps_the_dtype():
    logits = np.array([[1e4, 0.0, -1e4], [-3e4, -3e4 + 1, -3e4 - 2]], dtype=np.float32)
    targets = np.array([1, 0])
    loss, d_logits = categorical_cross_entropy(logits, targets)
    assert np.isfinite(loss) and np.isfinite(d_logits).all() and d_logits.dtype == np.float32
    want_loss, want_d = straightforward_cross_entropy(logits, targets)
    assert loss == pytest.approx(want_loss, rel=1e-6)
    np.testing.assert_allclose(d_logits, want_d, atol=1e-6)


def test_fused_cross_entropy_rejects_an_out_of_range_target():
    with pytest.raises(IndexError):
        categorical_cross_entropy(np.zeros((3, 4)), np.array([0, 4, 1]))


# -- optimisers ---------------------------------------------------------------------------------------------------

def old_update(name, param, grad, state, t, lr):
    """The optimisers as first written: the textbook formulas with temporaries (the results to keep)."""
    if name == "adam":
        state["m"] = 0.9 * state.get("m", 0) + 0.1 * grad
        state["v"] = 0.999 * state.get("v", 0) + 0.001 * grad * grad
        m_hat, v_hat = state["m"] / (1 - 0.9 ** t), state["v"] / (1 - 0.999 ** t)
        return param - lr * 0.01 * param - lr * m_hat / (np.sqrt(v_hat) + 1e-8)        # weight_decay 0.01
    if name == "sgd":
        state["v"] = 0.9 * state.get("v", 0) - lr * grad
        return param + 0.9 * state["v"] - lr * grad                                      # Nesterov
    if name == "adagrad":
        state["G"] = state.get("G", 0) + grad * grad
        return param - lr * grad / (np.sqrt(state["G"]) + 1e-10)
    state["s"] = 0.9 * state.get("s", 0) + 0.1 * grad * grad
    return param - lr * grad / (np.sqrt(state["s"]) + 1e-7)


OPTIMIZERS = {"adam": lambda: Adam(0.01, weight_decay=0.01), "sgd": lambda: SGD(0.05, 0.9, nesterov=True),
              "adagrad": lambda: Adagrad(0.05), "rmsprop": lambda: RMSprop(0.01)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_in_place_optimisers_equal_the_textbook_updates_with_the_clipping_scale(name):
    rng = np.random.default_rng(2)
    params = {"w": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}
    want = {k: v.copy() for k, v in params.items()}
    states = {k: {} for k in params}
    optimizer = OPTIMIZERS[name]()
    addresses = {k: v.ctypes.data for k, v in params.items()}
    for t in range(1, 6):
        grads = {k: rng.standard_normal(v.shape) * 3 for k, v in params.items()}
        clipped = {k: g.copy() for k, g in grads.items()}
        norm = clip_grad_norm(clipped, 2.0)
        optimizer.step(params, grads, min(1.0, 2.0 / (norm + 1e-12)))
        for k in params:
            want[k] = old_update(name, want[k], clipped[k], states[k], t, optimizer.lr)
    for k in params:
        np.testing.assert_allclose(params[k], want[k], rtol=1e-12, atol=1e-14)
        assert params[k].ctypes.data == addresses[k]                          # updated in place


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimiser_steps_allocate_no_temporaries(name):
    params = {"w": np.ones((300, 200)), "b": np.ones(200)}
    grads = {k: np.full_like(v, 0.5) for k, v in params.items()}
    optimizer = OPTIMIZERS[name]()
    optimizer.step(params, grads, 0.5)                                       # slots and scratch are made here
    tracemalloc.start()
    try:
        optimizer.step(params, grads, 0.5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < params["b"].nbytes * 4, f"{name} allocated {peak} bytes in a step"


def test_scratch_arrays_stay_out_of_the_checkpointed_state():
    optimizer = Adam(0.01)
    optimizer.step({"w": np.ones(3)}, {"w": np.ones(3)})
    assert set(optimizer.state_dict()["arrays"]) == {"w/m", "w/v"}


# -- optional backend kernels --------------------------------------------------------------------------------------

class Recording:
    """A backend implementation offering every front-end kernel, recording calls and answering with the xp code."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.name, self.xp = inner.name, inner.xp

    def softmax_cross_entropy(self, logits, targets, weights):
        self.calls.append("softmax_cross_entropy")
        return softmax_cross_entropy(logits, targets, weights)

    def embedding_backward(self, ids, d_rows, vocab_size, padding_idx=None):
        self.calls.append("embedding_backward")
        return embedding_gradient(ids, d_rows, vocab_size, padding_idx)

    def matmul(self, a, b):
        self.calls.append("matmul")
        return a @ b

    def adam_update(self, *args):
        from rnnbackends.optimizers import adam_update
        self.calls.append("adam_update")
        return adam_update(*args)


class WithKernels:
    """The numpy backend's handle with the front-end kernels declared: ``capabilities`` and ``impl`` extended."""

    def __init__(self, declared):
        self.handle = rnnbackends.get_backend("numpy")
        self.name, self.xp = self.handle.name, self.handle.xp
        self.impl = Recording(self.handle.impl)
        self.capabilities = self.handle.capabilities | set(declared)

    def forward_sequence(self, *args, **kwargs):
        return self.handle.forward_sequence(*args, **kwargs)

    def backward_sequence(self, *args, **kwargs):
        return self.handle.backward_sequence(*args, **kwargs)


def one_step(backend, seed=0):
    """The weights after one train_step of a small language model on ``backend``, and the loss."""
    model = LanguageModel(12, embed_dim=5, hidden_size=7, backend=backend, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    batch = Batch((rng.integers(0, 12, (6, 3)),), rng.integers(0, 12, (6, 3)))
    loss = train_step(model, categorical_cross_entropy, Adam(0.01), batch, clip_norm=0.5)
    return loss, model.state_dict()


def test_a_step_uses_every_declared_kernel_and_gives_the_fallback_result():
    backend = WithKernels(FRONTEND_CAPABILITIES)
    loss, weights = one_step(backend)
    assert sorted(set(backend.impl.calls)) == sorted(FRONTEND_CAPABILITIES)
    want_loss, want_weights = one_step("numpy")
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for name, value in want_weights.items():
        np.testing.assert_allclose(weights[name], value, rtol=1e-12, atol=1e-15)


def test_undeclared_kernels_are_not_called_and_the_xp_code_runs():
    backend = WithKernels(["embedding_backward"])
    one_step(backend)
    assert set(backend.impl.calls) == {"embedding_backward"}
    assert kernel(backend, "adam_update") is None and kernel(None, "adam_update") is None


def test_losses_use_a_kernel_only_within_computing_on_a_backend_of_their_array_module():
    backend = WithKernels(FRONTEND_CAPABILITIES)
    logits, targets = np.zeros((4, 3)), np.array([0, 1, 2, 0])
    categorical_cross_entropy(logits, targets)
    assert backend.impl.calls == []
    with computing_on(backend):
        categorical_cross_entropy(logits, targets)
    assert backend.impl.calls == ["softmax_cross_entropy"]


def test_embedding_gradient_sums_repeated_ids_and_zeroes_padding():
    layer = Embedding(6, 3, padding_idx=0, backend="numpy", dtype="float64")
    ids = np.array([[1, 0], [4, 1], [1, 5]])
    layer.forward(ids)
    d_x = np.arange(18, dtype=np.float64).reshape(3, 2, 3)
    layer.backward(d_x)
    want = np.zeros((6, 3))
    for (t, b), v in np.ndenumerate(ids):
        want[v] += d_x[t, b]
    want[0] = 0.0
    np.testing.assert_array_equal(layer.grads["weight"], want)


def test_a_step_on_a_backend_owning_its_threads_keeps_blas_at_one_thread_throughout():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        """NumPy's BLAS threads (other BLAS libraries, such as SciPy's, may be loaded too)."""
        return max(c["num_threads"] for c in threadpool_info() if c["user_api"] == "blas" and "numpy" in c["filepath"])
    owning = WithKernels(())
    owning.impl.owns_threads = True
    with threadpool_limits(2, user_api="blas"):
        with computing_on(WithKernels(())):
            assert blas_threads() == 2
        with computing_on(owning):
            assert blas_threads() == 1
        assert blas_threads() == 2


def test_segment_sums_by_running_totals_equal_numpy_segment_sums():
    from rnnbackends.layers import segment_sums
    rng = np.random.default_rng(6)
    ids = np.sort(rng.integers(0, 40, 500))
    rows = rng.standard_normal((500, 7)).astype(np.float32)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:] - 1, len(ids) - 1]
    np.testing.assert_allclose(segment_sums(np, rows, ends), np.add.reduceat(rows, starts, axis=0), rtol=1e-5,
                               atol=1e-5)
