"""Plots of a training run with matplotlib: loss and metric curves, and forecasts against the truth for time series."""
from __future__ import annotations


def plot_title(result):
    """The title of the loss panel: the task, its metric as reported, and the best baseline."""
    return f"{result.task}: {result.metric} {result.value:.3f} (best baseline {result.baseline:.3f})"


def plot_result(result, path):
    """Save a PNG: loss per epoch, validation metrics per epoch (when there are any), forecasts (when there are any)."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'rnnbackends[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first_record = result.histories[0][0] if result.histories and result.histories[0] else {}
    metrics = [k for k in first_record if k.startswith("val_") and k != "val_loss"]
    series = result.plot_series
    panels = 1 + bool(metrics) + bool(series)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    for i, history in enumerate(h for h in result.histories if h):
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["loss"] for r in history], color=f"C{i}", label=f"model {i + 1} train")
        if "val_loss" in history[0]:
            ax.plot(epochs, [r["val_loss"] for r in history], color=f"C{i}", linestyle="--",
                    label=f"model {i + 1} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(plot_title(result))
    ax.legend(fontsize=7)
    if metrics:
        ax = axes.pop(0)
        for i, history in enumerate(h for h in result.histories if h):
            for style, key in zip(("-", ":", "-."), metrics):
                ax.plot([r["epoch"] for r in history], [r[key] for r in history], color=f"C{i}", linestyle=style,
                        label=f"model {i + 1} {key}")
        ax.axhline(result.baseline, color="grey", linestyle=":", label="best baseline (test)")
        ax.set_xlabel("epoch")
        ax.set_title("validation metrics")
        ax.legend(fontsize=7)
    if series:
        ax = axes.pop(0)
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
