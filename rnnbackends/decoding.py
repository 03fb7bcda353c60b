"""Decoding from a trained model's next-token distributions: greedy, temperature and top-k sampling, beam search.

Everything here works on host NumPy logits; the model supplies a ``step(tokens (B,), state) -> (logits (B, V),
state)`` function, so these decoders serve the language model and the encoder–decoder alike.
"""
from __future__ import annotations

import numpy as np


def log_softmax(logits):
    """log softmax over the last axis, in float64: (..., V) -> (..., V)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def sample_token(logits, temperature=1.0, top_k=None, rng=None, banned=None):
    """One id from logits (V,): argmax when ``temperature`` is 0, else a draw from softmax(z / temperature) over the
    top k, by inverting its running sum: the first id whose cumulative e^{(z - max z)/temperature} exceeds u·total.
    Ids in ``banned`` (an int array) are never chosen."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    weights = np.array(logits, dtype=np.float64)                            # (V,) a copy, computed in place
    if banned is not None:
        weights[banned] = -np.inf
    if temperature == 0:
        return int(weights.argmax())
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top-k must be >= 1, got {top_k}")
        if top_k < len(weights):
            kth_largest = np.partition(weights, -top_k)[-top_k]
            weights[weights < kth_largest] = -np.inf
    weights -= np.maximum.reduce(weights)                                   # the ufuncs themselves: ~1 µs each
    weights *= 1.0 / temperature
    np.exp(weights, out=weights)                                            # softmax(z / temperature), unnormalised
    cumulative = np.add.accumulate(weights)                                 # running sums (V,)
    rng = rng if rng is not None else np.random.default_rng()
    token = int(cumulative.searchsorted(rng.random() * cumulative[-1], side="right"))
    return token if token < len(weights) else int(np.flatnonzero(weights)[-1])   # u·total rounded up to the total


def sample_sequence(step, state, first_token, length, temperature=1.0, top_k=None, rng=None, end_id=None,
                    banned=()):
    """Feed each sampled id back in: ``length`` ids after ``first_token`` (stops early at ``end_id``); ids in
    ``banned`` are never sampled. ``step(tokens (1,), state) -> (logits (1, V), state)``; the state may stay on
    the backend."""
    generated, token = [], first_token
    banned = np.asarray([int(i) for i in banned], dtype=np.int64) if len(banned) else None
    tokens = np.empty(1, dtype=np.int64)                                    # the one id fed back in, reused
    for _ in range(length):
        tokens[0] = token
        logits, state = step(tokens, state)                                 # (1, V)
        token = sample_token(logits[0], temperature, top_k, rng, banned)
        if token == end_id:
            break
        generated.append(token)
    return generated


def state_rows(state):
    """N, the rows of a decoding state: an array (parts, N, ...) or a tuple of such arrays."""
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def take_rows(state, rows):
    """The state's rows ``rows`` (axis 1 of every array of a tuple state): reordered, repeated or dropped."""
    return tuple(np.asarray(s)[:, rows] for s in state) if isinstance(state, tuple) else np.asarray(state)[:, rows]


def greedy_search(step, state, start_id, end_id, max_steps, alpha=1.0):
    """The most probable next id at every step for a batch of N: -> (id lists without start/end, normalised scores).

    ``state`` is (layers, N, H) on the host, or a tuple of arrays with the N rows on axis 1; scores are
    length-normalised as in ``beam_search``.
    """
    N = state_rows(state)
    tokens = np.full(N, start_id, dtype=np.int64)                          # (N,)
    outputs, log_probability, lengths = [[] for _ in range(N)], np.zeros(N), np.zeros(N, dtype=np.int64)
    finished = np.zeros(N, dtype=bool)
    for _ in range(max_steps):
        logits, state = step(tokens, state)                                # (N, V)
        log_p = log_softmax(logits)
        tokens = log_p.argmax(axis=-1)
        log_probability += np.where(finished, 0.0, log_p[np.arange(N), tokens])
        lengths += ~finished
        for n in np.flatnonzero(~finished):
            finished[n] = tokens[n] == end_id
            if not finished[n]:
                outputs[n].append(int(tokens[n]))
        if finished.all():
            break
    return outputs, normalised_score(log_probability, lengths, alpha)


def normalised_score(log_probability, length, alpha):
    """Length-normalised score log P / length^alpha (length counts the end token when emitted)."""
    return log_probability / np.maximum(length, 1) ** alpha


def beam_search(step, state, start_id, end_id, max_steps, beam_size=5, alpha=1.0):
    """Length-normalised beam search for a batch of N sources at once.

    ``state`` is (layers, N, H) or a tuple of arrays with the N rows on axis 1; each source keeps ``beam_size``
    live hypotheses, expanding all of them as one batch of N·k rows. A hypothesis that emits ``end_id`` is set
    aside; a source is done when it has ``beam_size`` finished hypotheses, and unfinished ones count at
    ``max_steps``. Returns (id lists, normalised scores).
    """
    N, k = state_rows(state), beam_size
    state = take_rows(state, np.repeat(np.arange(N), k))                    # (layers, N·k, H)
    tokens = np.full(N * k, start_id, dtype=np.int64)                       # (N·k,)
    history = np.zeros((N * k, 0), dtype=np.int64)                          # (N·k, steps)
    scores = np.tile(np.r_[0.0, np.full(k - 1, -np.inf)], N)                # (N·k,): only beam 0 alive at first
    finished = [[] for _ in range(N)]                                       # per source: (score, ids)
    done = np.zeros(N, dtype=bool)
    for t in range(max_steps):
        logits, state = step(tokens, state)                                 # (N·k, V)
        log_p = log_softmax(logits)
        V = log_p.shape[-1]
        candidates = (scores[:, None] + log_p).reshape(N, k * V)            # (N, k·V)
        top = np.argpartition(-candidates, k - 1, axis=1)[:, :k]            # (N, k) the k best, unordered
        order = np.argsort(-np.take_along_axis(candidates, top, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)                       # (N, k) best first
        beam, token = best // V, best % V
        rows = (np.arange(N)[:, None] * k + beam).ravel()                   # (N·k,) the parent of each new beam
        scores = np.take_along_axis(candidates, best, axis=1).ravel()       # (N·k,)
        tokens = token.ravel()
        history = np.concatenate([history[rows], tokens[:, None]], axis=1)
        state = take_rows(state, rows)
        for r in np.flatnonzero((tokens == end_id) & np.isfinite(scores)):
            n = r // k
            if not done[n]:
                ids = history[r, :-1].tolist()
                finished[n].append((normalised_score(scores[r], t + 1, alpha), ids))
            scores[r] = -np.inf
        done |= np.array([len(f) >= k for f in finished])
        scores[np.repeat(done, k)] = -np.inf
        if done.all():
            break
    for r in np.flatnonzero(np.isfinite(scores)):
        n = r // k
        finished[n].append((normalised_score(scores[r], history.shape[1], alpha), history[r].tolist()))
    chosen = [max(f, key=lambda hypothesis: hypothesis[0]) for f in finished]
    return [ids for _, ids in chosen], np.array([score for score, _ in chosen])
