"""CTC: the loss and gradient against PyTorch and finite differences, decoding, and the speech models' gradients."""
import numpy as np
import pytest

from rnnbackends.ctc import beam_decode, collapse, ctc_loss, greedy_decode, prefix_beam_search
from rnnbackends.gradcheck import check_gradients
from rnnbackends.speech.model import FrameClassifier, FrameStack, SpeechRecognizer


def random_case(seed, T=14, B=7, K=5, S=6):
    """Logits (T, B, K+1) and targets with repeated labels, an empty target, short inputs and padding."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(T, B, K + 1)) * 2.0
    input_lengths = rng.integers(1, T + 1, size=B)
    input_lengths[0] = T
    target_lengths = np.minimum(rng.integers(0, S + 1, size=B), input_lengths // 2)
    target_lengths[1] = 0                                                       # empty target
    targets = rng.integers(1, K + 1, size=(B, S))
    targets[2, :4] = [3, 3, 3, 1]                                               # repeats need a blank between
    target_lengths[2] = 4
    input_lengths[2] = max(input_lengths[2], 7)
    return logits, input_lengths, targets, target_lengths


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ctc_matches_torch(reduction, seed):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the CTC loss")
    logits, input_lengths, targets, target_lengths = random_case(seed)
    loss, d_logits = ctc_loss(logits, input_lengths, targets, target_lengths, reduction=reduction)
    x = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.ctc_loss(x.log_softmax(-1), torch.tensor(targets), torch.tensor(input_lengths),
                                            torch.tensor(target_lengths), reduction=reduction)
    expected.sum().backward()
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(d_logits, x.grad.numpy(), rtol=1e-5, atol=1e-12)


def test_ctc_impossible_target_is_infinite_or_zeroed():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for the CTC loss")
    logits = np.random.default_rng(0).normal(size=(3, 2, 4))
    targets, input_lengths, target_lengths = np.array([[1, 1, 2], [1, 2, 3]]), np.array([3, 3]), np.array([3, 3])
    losses, _ = ctc_loss(logits, input_lengths, targets, target_lengths, reduction="none")
    assert np.isinf(losses[0]) and np.isfinite(losses[1])                     # 1,1,2 needs 4 steps
    zeroed, d_logits = ctc_loss(logits, input_lengths, targets, target_lengths, reduction="none", zero_infinity=True)
    x = torch.tensor(logits, requires_grad=True)
    expected = torch.nn.functional.ctc_loss(x.log_softmax(-1), torch.tensor(targets), torch.tensor(input_lengths),
                                            torch.tensor(target_lengths), reduction="none", zero_infinity=True)
    expected.sum().backward()
    np.testing.assert_allclose(zeroed, expected.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(d_logits, x.grad.numpy(), rtol=1e-5, atol=1e-12)


def test_ctc_gradient_check():
    logits, input_lengths, targets, target_lengths = random_case(3, T=8, B=4, K=3, S=4)

    def loss():
        return ctc_loss(logits, input_lengths, targets, target_lengths)[0]
    _, d_logits = ctc_loss(logits, input_lengths, targets, target_lengths)
    check_gradients(loss, {"logits": logits}, {"logits": d_logits}, max_checks=200)


def test_ctc_list_targets_and_bad_lengths():
    logits = np.zeros((5, 2, 3))
    listed, _ = ctc_loss(logits, [5, 4], [[1, 2], []], [2, 0], reduction="none")
    padded, _ = ctc_loss(logits, [5, 4], np.array([[1, 2], [0, 0]]), [2, 0], reduction="none")
    np.testing.assert_allclose(listed, padded)
    with pytest.raises(ValueError, match="input lengths"):
        ctc_loss(logits, [6, 4], [[1], [2]], [1, 1])


@pytest.mark.parametrize("model_class, config", [
    (SpeechRecognizer, dict(hidden_size=5, num_layers=2, stride=2, dropout=0.0)),
    (FrameClassifier, dict(hidden_size=6, stride=2, context=1)),
])
def test_speech_models_gradient_check(model_class, config):
    model = model_class(4, 3, **config, backend="numpy", dtype="float64")
    rng = np.random.default_rng(0)
    x, lengths = rng.normal(size=(9, 3, 4)), np.array([9, 6, 3])
    targets, target_lengths = [[1, 2], [3, 3], []], [2, 2, 0]

    def loss():
        return ctc_loss(model.forward(x, lengths), model.output_lengths(lengths), targets, target_lengths)[0]
    _, d_logits = ctc_loss(model.forward(x, lengths), model.output_lengths(lengths), targets, target_lengths)
    model.backward(d_logits)
    check_gradients(loss, model.params, {k: v.copy() for k, v in model.grads.items()})


def test_frame_stack_round_trip():
    stack = FrameStack(3, backend="numpy", dtype="float64")
    x = np.arange(7 * 2 * 2, dtype=np.float64).reshape(7, 2, 2)
    y = stack.forward(x)
    assert y.shape == (3, 2, 6)
    np.testing.assert_array_equal(y[1, 0], np.concatenate([x[3, 0], x[4, 0], x[5, 0]]))
    np.testing.assert_array_equal(y[2, 1, 2:], 0.0)                             # padding frames
    np.testing.assert_array_equal(stack.backward(y), x)                         # the adjoint of a permutation


def test_collapse_and_greedy():
    assert collapse([0, 1, 1, 0, 1, 2, 2, 0]) == [1, 1, 2]
    logits = np.full((4, 1, 3), -5.0)
    for t, k in enumerate([1, 1, 0, 1]):
        logits[t, 0, k] = 5.0
    assert greedy_decode(logits, [4]) == [[1, 1]]
    assert greedy_decode(logits, [2]) == [[1]]


def test_prefix_beam_search_sums_paths():
    # best path says "blank blank" (0.6·0.6 = 0.36), but "1" has P = 1 - 0.36 - P("1 1"-free paths) = 0.64 - ...:
    # paths for "1": (1,1), (1,0), (0,1) = 0.16 + 0.24 + 0.24 = 0.64
    probabilities = np.array([[0.6, 0.4], [0.6, 0.4]])
    logits = np.log(probabilities)[:, None, :]
    assert greedy_decode(logits, [2]) == [[]]
    ids, log_p = prefix_beam_search(np.log(probabilities), beam_size=4)
    assert ids == [1] and np.isclose(np.exp(log_p), 0.64)
    assert beam_decode(logits, [2], beam_size=4) == [[1]]
