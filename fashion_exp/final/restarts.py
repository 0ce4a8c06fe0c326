"""The final head, trained from several seeds; the restart with the best validation epoch is kept.

One training of the head is a noisy draw: on the real 299px features the same hyperparameters
reach a best val_accuracy of 0.900 to 0.906 depending on the seed alone. Each restart keeps its best
epoch by the objective (ModelCheckpoint); across restarts the best objective wins, ties going to the
better value of the other metric (val_loss for val_accuracy and back), then to the earlier restart.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fashion_exp.config import OBJECTIVES, AugmentationPolicy, TunerConfig
from fashion_exp.features.features import Features
from fashion_exp.head.fit import Batching, Rows, fit_on_views, training_views
from fashion_exp.head.model import HeadInputs, new_head
from fashion_exp.hyperparameters import HeadParams


@dataclass
class Restart:
    """One training of the head: its seed, its best epoch and the whole per-epoch history."""

    seed: int
    best_epoch: int
    val_accuracy: float
    val_loss: float
    history: dict[str, list[float]]

    def rank(self, objective: str) -> tuple[float, float]:
        """Larger is better: the objective first, the other validation metric breaks ties."""
        return rank(objective, self.val_accuracy, self.val_loss)


def rank(objective: str, val_accuracy: float, val_loss: float) -> tuple[float, float]:
    """A sort key, larger is better: the objective first, the other validation metric breaks ties."""
    if objective == "val_loss":
        return (-val_loss, val_accuracy)
    return (val_accuracy, -val_loss)


@dataclass
class HeadTraining:
    """Everything a head training needs but its hyperparameters and seed."""

    views: tf.Tensor | list  # cached train features: (K views, n, dim), or K activation maps (head.training_views)
    labels: np.ndarray
    val: tuple[np.ndarray, np.ndarray]
    n_classes: int
    epochs: int
    batch_size: int
    validation_batch_size: int
    objective: str  # val_accuracy | val_loss: which epoch is the best
    top: keras.Model | None = None  # the backbone's pretrained top blocks, for heads with blocks > 0
    patience: int | None = None  # stop after this many epochs without a better objective (None: every epoch)
    precision: str = "float32"  # the top blocks' Keras dtype policy (Features.precision)

    @classmethod
    def of(
        cls,
        features: Features,
        policy: AugmentationPolicy,
        epochs: int,
        tuner: TunerConfig,
        patience: int | None = None,
    ) -> HeadTraining:
        """Training on `policy`'s views of the features, validated on the validation split."""
        return cls(
            views=training_views(features.views(policy)),
            labels=features.train_labels,
            val=(features.val, features.val_labels),
            n_classes=features.n_classes,
            epochs=epochs,
            batch_size=tuner.batch_size,
            validation_batch_size=tuner.validation_batch_size,
            objective=tuner.objective,
            top=features.top,
            patience=patience,
            precision=features.precision,
        )

    @property
    def inputs(self) -> HeadInputs:
        return HeadInputs(self.val[0].shape[1:], self.n_classes, self.batch_size, self.top, self.precision)


class EpochBar(keras.callbacks.Callback):
    """Moves a progress bar (tqdm) one step an epoch and shows that epoch's validation metrics:
    a fine-tuned head's epochs take minutes each."""

    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.set_postfix({k: f"{logs[k]:.4f}" for k in ("val_accuracy", "val_loss") if k in logs}, refresh=False)
        self.bar.update(1)
        self.ran = epoch + 1

    def on_train_begin(self, logs=None):
        self.ran = 0

    def on_train_end(self, logs=None):
        # a restart stopped early (final.patience) will not run its other epochs: the bar's total drops
        self.bar.total -= self.params["epochs"] - self.ran
        self.bar.refresh()


def train_once(
    training: HeadTraining, params: HeadParams, seed: int, callbacks: Sequence[keras.callbacks.Callback] = ()
) -> tuple[keras.Model, Restart]:
    """Fit a head for `training.epochs` with `seed` (and `callbacks`: progress), or until
    `training.patience` epochs bring no better objective; restore its best epoch by the objective."""
    head = new_head(training.inputs, params, seed, len(training.labels))
    direction = OBJECTIVES[training.objective]
    with tempfile.TemporaryDirectory() as tmp:
        best_path = Path(tmp) / "best.weights.h5"
        checkpoint = keras.callbacks.ModelCheckpoint(
            best_path, monitor=training.objective, mode=direction, save_best_only=True, save_weights_only=True
        )
        if training.patience:
            stop = keras.callbacks.EarlyStopping(monitor=training.objective, mode=direction, patience=training.patience)
            callbacks = [stop, *callbacks]
        rows = Rows(training.views, training.labels, training.val)
        batching = Batching(training.batch_size, training.validation_batch_size, seed)
        history = fit_on_views(head, rows, batching, training.epochs, callbacks=[checkpoint, *callbacks])
        head.load_weights(best_path)
    curves = {k: [float(v) for v in values] for k, values in history.history.items()}
    pick = np.argmax if direction == "max" else np.argmin  # the first of equal bests, as ModelCheckpoint keeps
    best_epoch = int(pick(curves[training.objective]))
    restart = Restart(seed, best_epoch, curves["val_accuracy"][best_epoch], curves["val_loss"][best_epoch], curves)
    return head, restart


@dataclass(frozen=True)
class Restarts:
    """What train_restarts kept: the best heads, best first, their Restarts, and every Restart."""

    heads: list  # the `keep` best heads (keras.Model), best first
    ranked: list[Restart]  # their Restarts, in the same order
    every: list[Restart]  # every restart's, in seed order


def train_restarts(
    train: Callable[[int], tuple[keras.Model, Restart]],
    seeds: list[int],
    objective: str,
    on_restart: Callable[[int, Restart], None] = lambda i, r: None,
    keep: int = 1,
) -> Restarts:
    """train(seed) for every seed; keeps the `keep` best heads.

    train is train_once with everything but the seed bound (functools.partial); restarts are ranked
    by `objective`, exact ties going to the earlier restart; on_restart(index, restart) is called as
    each restart ends (progress, logging). Heads beyond the `keep` best are let go as soon as they
    fall out.
    """
    if not seeds:
        raise ValueError("train_restarts needs at least one seed")
    kept: list[tuple[keras.Model, Restart]] = []
    every = []
    for index, seed in enumerate(seeds):
        head, restart = train(seed)
        every.append(restart)
        on_restart(index, restart)
        kept.append((head, restart))
        kept.sort(key=lambda pair: pair[1].rank(objective), reverse=True)  # stable: ties keep seed order
        del kept[keep:], head
        gc.collect()  # a head that fell out (this one or an earlier one) goes now, not at exit
    return Restarts([h for h, _ in kept], [r for _, r in kept], every)
