"""The final head, trained from several seeds; the restart with the best validation epoch is kept.

One training of the head is a noisy draw: on the real 299px features the same hyperparameters
reach a best val_accuracy of 0.900 to 0.906 depending on the seed alone. Each restart keeps its best
epoch by val_accuracy (ModelCheckpoint); across restarts the highest val_accuracy wins, ties going
to the lower val_loss at that epoch, then to the earlier restart.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fashion_exp.head import build_head, fit_on_views, steps_for


@dataclass
class Restart:
    """One training of the head: its seed, its best epoch and the whole per-epoch history."""

    seed: int
    best_epoch: int
    val_accuracy: float
    val_loss: float
    history: dict[str, list[float]]

    def rank(self) -> tuple[float, float]:
        return (self.val_accuracy, -self.val_loss)


def train_once(
    views: tf.Tensor,
    labels: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    hp: dict,
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[keras.Model, Restart]:
    """Fit a head for `epochs` with `seed`; restore its best epoch by val_accuracy."""
    steps = steps_for(len(labels), batch_size)
    head = build_head(views.shape[-1], n_classes, hp["learning_rate"], hp["size_inner"], hp["droprate"], seed, steps)
    with tempfile.TemporaryDirectory() as tmp:
        best_path = Path(tmp) / "best.weights.h5"
        checkpoint = keras.callbacks.ModelCheckpoint(
            best_path, monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True
        )
        history = fit_on_views(head, views, labels, val, batch_size, seed, epochs, callbacks=[checkpoint])
        head.load_weights(best_path)
    curves = {k: [float(v) for v in values] for k, values in history.history.items()}
    best_epoch = int(np.argmax(curves["val_accuracy"]))  # ModelCheckpoint keeps the first of equal bests too
    restart = Restart(seed, best_epoch, curves["val_accuracy"][best_epoch], curves["val_loss"][best_epoch], curves)
    return head, restart


def train_restarts(
    train: Callable[[int], tuple[keras.Model, Restart]],
    seeds: list[int],
    on_restart: Callable[[int, Restart], None] = lambda i, r: None,
) -> tuple[keras.Model, Restart, list[Restart]]:
    """train(seed) for every seed; returns (best head, its Restart, every Restart in seed order).

    train is train_once with everything but the seed bound (functools.partial); on_restart(index,
    restart) is called as each restart ends (progress, logging).
    """
    if not seeds:
        raise ValueError("train_restarts needs at least one seed")
    best_head, best, every = None, None, []
    for index, seed in enumerate(seeds):
        head, restart = train(seed)
        every.append(restart)
        on_restart(index, restart)
        if best is None or restart.rank() > best.rank():
            best_head, best = head, restart
        del head
        gc.collect()  # the losing head (this one or the one it replaced) goes now, not at exit
    return best_head, best, every
