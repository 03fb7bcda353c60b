"""Sampling a token: the draw follows softmax(z / temperature) over the allowed ids, and a seed fixes the stream."""
import numpy as np
import pytest

from rnnbackends.decoding import log_softmax, sample_sequence, sample_token


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, None), (2.0, 4)])
def test_draws_follow_the_tempered_softmax(temperature, top_k):
    logits = np.random.default_rng(5).normal(size=9).astype(np.float32)
    z = logits.astype(np.float64) / temperature
    if top_k is not None:
        z[np.argsort(logits)[:-top_k]] = -np.inf
    expected = np.exp(log_softmax(z))                                       # (V,)
    rng, n = np.random.default_rng(11), 40_000
    counts = np.bincount([sample_token(logits, temperature, top_k, rng) for _ in range(n)], minlength=9)
    assert counts[expected == 0].sum() == 0
    chi_square = (((counts - n * expected) ** 2) / np.maximum(n * expected, 1e-12))[expected > 0].sum()
    assert chi_square < 30                                                  # 8 degrees of freedom: p < 1e-3


def test_a_draw_at_the_top_of_the_range_never_lands_on_a_banned_id():
    class Top:
        """A generator whose uniform is the largest double below 1."""

        def random(self):
            return np.nextafter(1.0, 0.0)
    logits = np.array([0.3, 2.0, -np.inf, -np.inf])
    assert sample_token(logits, 1.0, rng=Top()) == 1


def test_a_seed_fixes_the_sampled_stream_and_banned_ids_never_appear():
    table = np.random.default_rng(2).normal(size=(6, 6))                   # next-token logits of a fixed chain

    def step(tokens, state):
        return table[tokens], state

    def sample(seed):
        return sample_sequence(step, None, 0, 200, 1.0, None, np.random.default_rng(seed), banned=(1, 4))

    assert sample(3) == sample(3) and sample(3) != sample(4)
    assert len(sample(3)) == 200 and not {1, 4} & set(sample(3))


def test_banned_ids_are_never_chosen_greedily_or_by_top_k():
    logits = np.array([0.1, 5.0, 2.0, 1.0, 4.0])
    banned = np.array([1, 4])
    assert sample_token(logits, 0.0, banned=banned) == 2
    rng = np.random.default_rng(0)
    assert {sample_token(logits, 1.0, top_k=2, rng=rng, banned=banned) for _ in range(300)} == {2, 3}
