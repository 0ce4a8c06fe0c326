"""Figures: one trial's learning curves, the comparison of every trial's val_accuracy, and which
hyperparameters matter (parallel coordinates of the trials, importance bars)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from fashion_exp.tracking.importance import MIN_TRIALS, choices, finished, log_scaled, varying  # noqa: E402


def learning_curves(history: dict[str, list[float]], title: str) -> Figure:
    """accuracy/val_accuracy and loss/val_loss per epoch, side by side."""
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        for name, style in ((metric, "--"), (f"val_{metric}", "-")):
            values = history.get(name, [])
            if values:
                ax.plot(range(len(values)), values, style, marker="o", markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def compare_trials(curves: dict[str, list[float]], best: str | None, title: str, metric: str) -> Figure:
    """`metric` per epoch for every trial (label -> values); the best trial drawn bold."""
    fig, ax = plt.subplots(figsize=(10, 6))
    for label, values in curves.items():
        if label == best:
            continue
        ax.plot(range(len(values)), values, alpha=0.45, linewidth=1, label=label)
    if best in curves:
        values = curves[best]
        ax.plot(range(len(values)), values, color="black", linewidth=3, marker="o", label=f"{best} (best)")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)


def confusion_matrix(matrix, class_names: list[str], title: str) -> Figure:
    """Counts with true classes as rows and predicted classes as columns."""
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                int(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if matrix[i, j] > peak / 2 else "black",
                fontsize=8,
            )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def image_grid(images: list, captions: list[str], title: str, columns: int = 6) -> Figure:
    """Images (uint8 arrays) with a caption under each, e.g. misclassified test photos."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def parallel_coordinates(trials: list[dict], score: str, title: str, *, higher_is_better: bool = True) -> Figure:
    """The finished trials (`{"hyperparameters": {...}, score: float}`) as lines across one vertical
    axis per hyperparameter that varied, then `score`; each line coloured by its score, the best on
    top. Learning rates sit on a log10 axis, categorical hyperparameters on evenly spaced ticks."""
    done = sorted(finished(trials, score), key=lambda trial: trial[score], reverse=not higher_is_better)
    columns = {name: [trial["hyperparameters"][name] for trial in done] for name in varying(done)}
    scores = [float(trial[score]) for trial in done]
    fig, host = plt.subplots(figsize=(3 + 1.8 * (len(columns) + 1), 5))
    xs = np.linspace(0, 1, len(columns) + 1)
    heights = [
        _coordinate_axis(host, x, name, values) for x, (name, values) in zip(xs[:-1], columns.items(), strict=True)
    ]
    heights.append(_coordinate_axis(host, xs[-1], score, scores, numeric=True))
    norm = Normalize(min(scores, default=0.0), max(scores, default=1.0))
    for i, (line, value) in enumerate(zip(np.array(heights).T, scores, strict=True)):
        best = i == len(scores) - 1
        host.plot(xs, line, color=plt.cm.viridis(norm(value)), linewidth=3 if best else 1.2, alpha=1 if best else 0.7)
    host.set_xlim(0, 1)
    host.set_ylim(0, 1)
    host.set_yticks([])
    host.set_xticks(xs, [*columns, score])
    for spine in host.spines.values():
        spine.set_visible(False)
    fig.subplots_adjust(left=0.07, right=0.93, bottom=0.1)  # not tight_layout: it ignores the twinned axes
    fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=host, label=score, fraction=0.04, pad=0.07)
    host.set_title(title)
    return fig


def _coordinate_axis(host: Axes, x: float, name: str, values: list, numeric: bool = False) -> np.ndarray:
    """A vertical axis for `name` at `x` (0..1 across `host`); returns where each value sits on it, 0..1."""
    ax = host.twinx()
    ax.set_label(name)  # not drawn: lets a reader of the figure find the axis by its hyperparameter
    ax.spines["right"].set_position(("axes", x))
    for side in ("left", "top", "bottom"):
        ax.spines[side].set_visible(False)
    categories = None if numeric else choices(values)
    if not numeric and log_scaled(name, values):
        return _log_axis(ax, values, categories)
    if categories is not None:
        ax.set_ylim(0, len(categories) - 1)
        ax.set_yticks(range(len(categories)), [f"{c:g}" if isinstance(c, float) else str(c) for c in categories])
        return np.array([categories.index(value) for value in values]) / (len(categories) - 1)
    low, high = ax.yaxis.get_major_locator().nonsingular(min(values, default=0.0), max(values, default=1.0))
    ax.set_ylim(low, high)
    return (np.array(values, dtype=float) - low) / (high - low)


def _log_axis(ax: Axes, values: list, categories: list | None) -> np.ndarray:
    """A log10 axis labelled with real values (1e-4, 1e-3): the choices, or 1-2-5 steps for a range."""
    low, high = min(values), max(values)
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    ax.yaxis.set_major_locator(FixedLocator(categories) if categories else LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: np.format_float_scientific(v, trim="-", exp_digits=1)))
    ax.yaxis.set_minor_formatter(NullFormatter())
    return (np.log10(values) - np.log10(low)) / (np.log10(high) - np.log10(low))


def importance_bars(importances: dict[str, float], title: str) -> Figure:
    """Horizontal bars of hyperparameter importances, the largest on top, each with its value."""
    ranked = sorted(importances.items(), key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.5 * len(ranked)))
    bars = ax.barh([name for name, _ in ranked], [value for _, value in ranked], color="tab:blue")
    ax.bar_label(bars, fmt="%.2f", padding=3)
    ax.set_xlim(0, 1.15 * max(importances.values(), default=1.0))
    ax.set_xlabel("fANOVA importance (shares of the score's variance; they sum to 1)")
    if not ranked:
        reasons = f"fewer than {MIN_TRIALS} finished trials, nothing varied, or every score was the same"
        ax.text(0.5, 0.5, f"no importances: {reasons}", ha="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig
