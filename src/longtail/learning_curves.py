"""Learning curves of a training: loss, accuracy, val macro-F1 and LR per epoch, in one PNG."""

from __future__ import annotations

from pathlib import Path

from longtail.atomic_file import atomic_path
from longtail.tracking.names import VAL_ACCURACY, VAL_LOSS, VAL_MACRO_F1


def plot_learning_curves(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Draw four panels (loss, accuracy, val macro-F1, learning rate) against the 1-based epoch.

    A plateau (docs/seed-log.md "EXP2": "learning curve plateaus") shows as flat train and val lines in the
    first two panels while the LR panel shows where it was stepped or decayed.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    n = max((len(v) for v in history.values()), default=0)
    epochs = list(range(1, n + 1))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    panels = [
        ("loss", [("loss", "train"), (VAL_LOSS, "val")], "linear"),
        ("accuracy", [("accuracy", "train"), (VAL_ACCURACY, "val")], "linear"),
        ("val macro-F1", [(VAL_MACRO_F1, "val")], "linear"),
        ("learning rate", [("learning_rate", "lr")], "log"),
    ]
    for ax, (name, series, scale) in zip(axes.flat, panels, strict=True):
        for key, label in series:
            values = history.get(key)
            if values:
                ax.plot(epochs[: len(values)], values, marker="o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale(scale)
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, what="learning curves") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path
