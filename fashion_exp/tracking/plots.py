"""Figures: one trial's learning curves and the comparison of every trial's val_accuracy."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


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
