"""Plots of a training run with matplotlib: loss curves, and the forecast against the truth for time series."""
from __future__ import annotations


def plot_result(result, path):
    """Save a PNG of the result's training/validation loss per epoch (and forecasts, when there are any)."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'rnnbackends[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.plot_series
    panels = 2 if series else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    for i, history in enumerate(result.histories):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["loss"] for r in history], color=f"C{i}", label=f"model {i + 1} train")
        if "val_loss" in history[0]:
            ax.plot(epochs, [r["val_loss"] for r in history], color=f"C{i}", linestyle="--", label=f"model {i + 1} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(f"{result.task}: test {result.metric} {result.value:.3f} (baseline {result.baseline:.3f})")
    ax.legend(fontsize=7)
    if series:
        ax = axes[0, 1]
        first, values = series["first"], series["values"]
        ax.plot(range(len(values)), values, color="black", label="truth")
        for name, forecast in series["forecasts"].items():
            ax.plot(range(first, first + len(forecast)), forecast, label=name)
        ax.axvline(first, color="grey", linestyle=":")
        ticks = list(range(0, len(values), max(1, len(values) // 6)))
        ax.set_xticks(ticks, [series["dates"][t] for t in ticks], rotation=30, fontsize=7)
        ax.set_title("hold-out forecasts")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
