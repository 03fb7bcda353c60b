"""Connectionist temporal classification (Graves et al. 2006): the loss and its gradient, and decoding.

The network emits, at every step t, a distribution over K labels plus a blank (id ``blank``, 0 by default). A
target l of length S is read as the extended sequence l' = (blank, l_1, blank, l_2, ..., l_S, blank) of length
2S+1; a path may stay on a symbol, move to the next one, or skip a blank between two different labels.
P(l | X) sums over all paths with the forward (α) and backward (β) variables, in log space; written once against
``xp`` so it runs on every backend, with the recursion over t and everything else vectorised over B and 2S+1.
"""
from __future__ import annotations

import numpy as np

from .layers import array_module, to_host


def _logsumexp(xp, *terms):
    """log Σ exp(terms) elementwise, safe where every term is -inf."""
    stacked = xp.stack(terms)
    top = stacked.max(axis=0)
    finite = xp.where(xp.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return finite + xp.log(xp.exp(stacked - finite).sum(axis=0))


def log_softmax(xp, logits):
    """log softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def ctc_loss(logits, input_lengths, targets, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """CTC negative log-likelihood of ``targets`` and its gradient with respect to ``logits``.

    logits (T, B, K+1) unnormalised, input_lengths (B,), targets (B, S) padded label ids (or a list of id lists),
    target_lengths (B,). Returns (loss, dL/dlogits): with ``reduction`` "mean" the loss is the mean over the batch
    of -log P(l | X) / max(|l|, 1) (as ``torch.nn.functional.ctc_loss``), "sum" the sum, "none" the (B,) host
    array of -log P (and the gradient of their sum). Steps t >= input_lengths[b] get zero gradient. A target the
    input is too short for has loss inf; ``zero_infinity`` makes that 0 with zero gradient.
    """
    xp = array_module(logits)
    T, B, _ = logits.shape
    input_lengths = np.asarray(to_host(input_lengths), dtype=np.int64).reshape(B)
    target_lengths = np.asarray(to_host(target_lengths), dtype=np.int64).reshape(B)
    if isinstance(targets, (list, tuple)):
        padded = np.zeros((B, max([len(t) for t in targets] + [1])), dtype=np.int64)
        for b, t in enumerate(targets):
            padded[b, :len(t)] = t
        targets = padded
    targets = np.asarray(to_host(targets), dtype=np.int64).reshape(B, -1)
    if (input_lengths > T).any() or (input_lengths < 0).any():
        raise ValueError(f"input lengths must be in [0, {T}], got {input_lengths.tolist()}")
    if (target_lengths > targets.shape[1]).any():
        raise ValueError(f"target lengths {target_lengths.tolist()} exceed the {targets.shape[1]} target columns")
    S_ext = 2 * targets.shape[1] + 1
    extended = np.full((B, S_ext), blank, dtype=np.int64)                          # l' (B, 2S+1)
    extended[:, 1::2] = targets
    ext_lengths = 2 * target_lengths + 1                                           # |l'| per row
    positions = np.arange(S_ext)[None, :]
    inside = positions < ext_lengths[:, None]                                      # (B, 2S+1)
    skip = np.zeros((B, S_ext), dtype=bool)                                        # may come from s-2
    skip[:, 2:] = (extended[:, 2:] != blank) & (extended[:, 2:] != extended[:, :-2])
    neg_inf = -np.inf
    log_probs = log_softmax(xp, logits)                                            # (T, B, K+1)
    rows = xp.asarray(np.arange(B)[:, None])
    ext = xp.asarray(extended)
    emit = log_probs[:, rows, ext]                                                 # (T, B, 2S+1): log y_t(l'_s)
    emit = xp.where(xp.asarray(inside)[None], emit, neg_inf)
    skip_x = xp.asarray(skip)
    valid = xp.asarray(np.arange(T)[:, None] < input_lengths[None, :])             # (T, B)

    def shift(a, k):
        """a (B, 2S+1) moved k places along s (to higher s for k > 0), -inf coming in."""
        out = xp.full_like(a, neg_inf)
        if k > 0:
            out[:, k:] = a[:, :-k]
        else:
            out[:, :k] = a[:, -k:]
        return out

    alpha = xp.full((T, B, S_ext), neg_inf, dtype=logits.dtype)                    # log α_t(s)
    start = xp.full((B, S_ext), neg_inf, dtype=logits.dtype)
    start[:, :2] = emit[0, :, :2]
    alpha[0] = start
    for t in range(1, T):
        previous = alpha[t - 1]
        came = _logsumexp(xp, previous, shift(previous, 1), xp.where(skip_x, shift(previous, 2), neg_inf))
        alpha[t] = xp.where(valid[t][:, None], came + emit[t], previous)             # past the end: carried over
    last_alpha = alpha[T - 1]                                                      # α at each row's last step
    end = xp.asarray(np.stack([ext_lengths - 1, np.maximum(ext_lengths - 2, 0)], axis=1))
    finals = last_alpha[rows, end]                                                 # (B, 2)
    finals[:, 1] = xp.where(xp.asarray(ext_lengths >= 2), finals[:, 1], neg_inf)
    log_likelihood = _logsumexp(xp, finals[:, 0], finals[:, 1])                    # log P(l | X) (B,)
    no_input = xp.asarray(np.where(target_lengths == 0, 0.0, neg_inf).astype(logits.dtype))
    log_likelihood = xp.where(xp.asarray(input_lengths > 0), log_likelihood, no_input)

    beta = xp.full((T, B, S_ext), neg_inf, dtype=logits.dtype)                     # log β_t(s), emission at t excluded
    final_states = xp.asarray((positions == ext_lengths[:, None] - 1) | (positions == ext_lengths[:, None] - 2))
    at_end = xp.where(final_states, 0.0, neg_inf).astype(logits.dtype)
    last_step = xp.asarray(input_lengths - 1)                                      # β is at_end from there on
    beta[T - 1] = at_end
    skip_next = xp.zeros_like(skip_x)
    skip_next[:, :-2] = skip_x[:, 2:]                                              # s may go to s+2
    for t in range(T - 2, -1, -1):
        ahead = beta[t + 1] + emit[t + 1]
        went = _logsumexp(xp, ahead, shift(ahead, -1), xp.where(skip_next, shift(ahead, -2), neg_inf))
        beta[t] = xp.where((t >= last_step)[:, None], at_end, went)

    losses = -log_likelihood                                                       # (B,)
    infinite = ~xp.isfinite(losses)
    occupancy = xp.exp(alpha + beta - xp.where(infinite, 0.0, log_likelihood)[None, :, None])  # γ_t(s) (T, B, 2S+1)
    one_hot = xp.asarray(np.eye(logits.shape[2], dtype=logits.dtype)[extended])    # (B, 2S+1, K+1)
    per_label = xp.einsum("tbs,bsk->tbk", occupancy, one_hot)                       # Σ_{s: l'_s = k} γ_t(s)
    d_logits = (xp.exp(log_probs) - per_label) * valid[:, :, None]                 # (T, B, K+1)
    if zero_infinity:
        losses = xp.where(infinite, 0.0, losses)
        d_logits = xp.where(infinite[None, :, None], 0.0, d_logits)
    losses_host = to_host(losses)
    if reduction == "none":
        return losses_host, d_logits
    if reduction == "sum":
        return float(losses_host.sum()), d_logits
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    scale = 1.0 / (np.maximum(target_lengths, 1) * B)                              # (B,)
    return float((losses_host * scale).sum()), d_logits * xp.asarray(scale.astype(logits.dtype))[None, :, None]


def collapse(ids, blank=0):
    """A best path's ids -> the labels: repeats merged, then blanks removed."""
    out, previous = [], None
    for i in ids:
        if i != previous and i != blank:
            out.append(int(i))
        previous = i
    return out


def greedy_decode(logits, lengths, blank=0):
    """The most probable label at every step, collapsed: logits (T, B, K+1) -> a list of B label-id lists."""
    best = np.asarray(to_host(logits)).argmax(axis=-1)                             # (T, B)
    return [collapse(best[:int(n), b], blank) for b, n in enumerate(np.asarray(to_host(lengths)))]


def prefix_beam_search(log_probs, beam_size=8, blank=0):
    """The most probable labelling of one utterance by prefix beam search: log_probs (T, K+1) -> (ids, log P).

    Each prefix keeps two scores, ending in a blank and ending in its last label, so that paths which collapse to
    the same labelling are summed, not competing (Hannun et al. 2014, without a language model).
    """
    log_probs = np.asarray(log_probs, dtype=np.float64)
    beams = {(): (0.0, -np.inf)}                                 # prefix -> (log P ending in blank, in its label)
    for step in log_probs:
        candidates = {}

        def add(prefix, p_blank, p_label):
            """Accumulate path scores into a candidate prefix."""
            old_blank, old_label = candidates.get(prefix, (-np.inf, -np.inf))
            candidates[prefix] = (np.logaddexp(old_blank, p_blank), np.logaddexp(old_label, p_label))
        for prefix, (p_blank, p_label) in beams.items():
            total = np.logaddexp(p_blank, p_label)
            add(prefix, total + step[blank], -np.inf)                              # a blank: prefix unchanged
            last = prefix[-1] if prefix else None
            if last is not None:
                add(prefix, -np.inf, p_label + step[last])                         # the last label repeated: merged
            for k in np.argsort(step)[::-1][:beam_size]:
                k = int(k)
                if k == blank:
                    continue
                # a new label; the same label again only after a blank
                add(prefix + (k,), -np.inf, (p_blank if k == last else total) + step[k])
        ranked = sorted(candidates.items(), key=lambda item: -np.logaddexp(*item[1]))
        beams = dict(ranked[:beam_size])
    prefix, scores = max(beams.items(), key=lambda item: np.logaddexp(*item[1]))
    return list(prefix), float(np.logaddexp(*scores))


def beam_decode(logits, lengths, beam_size=8, blank=0):
    """Prefix beam search on every row: logits (T, B, K+1) -> a list of B label-id lists."""
    logits = np.asarray(to_host(logits), dtype=np.float64)
    log_probs = logits - logits.max(axis=-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=-1, keepdims=True))
    return [prefix_beam_search(log_probs[:int(n), b], beam_size, blank)[0]
            for b, n in enumerate(np.asarray(to_host(lengths)))]
