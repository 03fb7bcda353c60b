"""The speech task's figure: a recording's log-mel spectrogram above the network's label posteriors over time."""
from __future__ import annotations

import numpy as np

from ..ctc import collapse
from ..layers import to_host
from .features import HOP_SECONDS


def plot_alignment(path, model, features, text, unit, symbols):
    """Save a PNG: features (frames, F) as a spectrogram, and P(label | step) with each emitted symbol marked."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'rnnbackends[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    logits = to_host(model.forward(features[:, None, :], np.array([len(features)])))[:, 0].astype(np.float64)
    posteriors = np.exp(logits - logits.max(axis=1, keepdims=True))
    posteriors /= posteriors.sum(axis=1, keepdims=True)                                 # (T', K+1)
    step_seconds = HOP_SECONDS * model.stride
    times = (np.arange(len(posteriors)) + 0.5) * step_seconds
    best = posteriors.argmax(axis=1)
    emitted = collapse(best)
    heard = (" " if unit == "word" else "").join(symbols[i - 1] for i in emitted)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.imshow(features.T, origin="lower", aspect="auto", cmap="magma",
               extent=(0, len(features) * HOP_SECONDS, 0, features.shape[1]))
    top.set_ylabel("mel band")
    top.set_title(f"said: {text!r}   recognised: {heard!r}")
    bottom.plot(times, posteriors[:, 0], color="lightgrey", label="blank")
    for k in range(1, posteriors.shape[1]):
        bottom.plot(times, posteriors[:, k], linewidth=1.2)
    previous = 0
    for t, k in enumerate(best):                                       # mark the first step of each emission
        if k != 0 and k != previous:
            bottom.annotate(symbols[k - 1], (times[t], posteriors[t, k]), xytext=(0, 4), textcoords="offset points",
                            ha="center", fontsize=9)
            top.axvline(times[t], color="white", linewidth=0.8, linestyle=":")
        previous = k
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("P(label | step)")
    bottom.set_ylim(0, 1.12)
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
