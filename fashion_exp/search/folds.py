"""k-fold cross-validation of one head configuration on cached features of train + validation.

Why: on 341 validation photos a trial's best val_accuracy moves with the seed alone by more than
the gap between the top configurations (benchmarks/bench_noise.py). Scoring every configuration
on all 3,409 labelled photos, each held out once, ranks them on ten times the evidence.

Rows are the training photos followed by the validation photos. A fold trains on the other folds'
rows (training photos through their augmented views, epoch e on view e mod K; validation photos,
never augmented, as they are) and scores its own rows on their un-augmented features. The
per-epoch scores of the folds are pooled: epoch e's accuracy is the share of all rows predicted
right by the head of the fold that held each out, so the best epoch is an epoch count chosen by
cross-validation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from fashion_exp.head.fit import Batching, Rows, fit_on_views
from fashion_exp.head.model import HeadInputs, new_head
from fashion_exp.hyperparameters import HeadParams


def fold_ids(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Stratified fold of every row (0..folds-1): each class is shuffled with `seed` and dealt
    round-robin, so every fold holds each class's share within one photo."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    ids = np.empty(len(labels), np.int64)
    offset = 0
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        ids[rng.permutation(rows)] = (offset + np.arange(len(rows))) % folds
        offset += len(rows)  # the next class starts where this one's deal ended: fold sizes stay even
    return ids


@dataclass
class FoldData:
    """Train + validation rows of one augmentation policy, ready to split into folds."""

    views: np.ndarray  # (K, n rows, dim): training photos' K views, validation photos repeated
    clean: np.ndarray  # (n rows, dim): every row un-augmented (what a held-out row is scored on)
    labels: np.ndarray  # (n rows,)

    @classmethod
    def join(
        cls,
        train_views: np.ndarray,
        train_clean: np.ndarray,
        train_labels: np.ndarray,
        val: np.ndarray,
        val_labels: np.ndarray,
    ) -> FoldData:
        k = len(train_views)
        repeated = np.broadcast_to(val, (k, *val.shape))
        return cls(
            views=np.concatenate([train_views, repeated], axis=1),
            clean=np.concatenate([train_clean, val]),
            labels=np.concatenate([train_labels, val_labels]),
        )


@dataclass
class CrossValidation:
    """Pooled per-epoch held-out metrics of one configuration (every row scored once an epoch)."""

    val_accuracy: list[float]
    val_loss: list[float]
    fold_best: list[float]  # each fold's own best val_accuracy (its spread shows the noise)

    @property
    def best_epoch(self) -> int:
        return int(np.argmax(self.val_accuracy))  # the first of equal bests


@dataclass
class FoldPlan:
    """How folds train: which fold holds each row out, and the heads' settings. Fold f's head is
    initialised, and its epochs shuffled, with seed + f."""

    ids: np.ndarray  # fold of every row (fold_ids)
    n_classes: int
    batch_size: int
    validation_batch_size: int
    seed: int

    @property
    def folds(self) -> int:
        return int(self.ids.max()) + 1

    def sizes(self) -> list[int]:
        """Rows each fold holds out."""
        return [int(np.sum(self.ids == fold)) for fold in range(self.folds)]

    def head(self, fold: int, params: HeadParams, dim: int) -> keras.Model:
        """A fresh compiled head for `fold` (its steps per epoch are its own training rows')."""
        inputs = HeadInputs((dim,), self.n_classes, self.batch_size)
        return new_head(inputs, params, self.seed + fold, int(np.sum(self.ids != fold)))

    def fit(
        self, data: FoldData, fold: int, head: keras.Model, epochs: int, callbacks: list | None = None
    ) -> keras.callbacks.History:
        """Fit `head` on every fold but `fold`, scoring `fold`'s rows each epoch; returns Keras' History."""
        train, held = self.ids != fold, self.ids == fold
        rows = Rows(tf.constant(data.views[:, train]), data.labels[train], (data.clean[held], data.labels[held]))
        batching = Batching(self.batch_size, self.validation_batch_size, self.seed + fold)
        return fit_on_views(head, rows, batching, epochs, callbacks=callbacks)


def pool(histories: list[dict[str, list[float]]], sizes: list[int]) -> CrossValidation:
    """Per-epoch metrics of every row: the folds' held-out metrics weighted by their row counts."""
    weights = np.asarray(sizes, float) / sum(sizes)

    def pooled(key: str) -> list[float]:
        return [float(v) for v in weights @ np.array([h[key] for h in histories])]

    return CrossValidation(
        val_accuracy=pooled("val_accuracy"),
        val_loss=pooled("val_loss"),
        fold_best=[float(max(h["val_accuracy"])) for h in histories],
    )


def cross_validate(
    data: FoldData, params: HeadParams, plan: FoldPlan, epochs: int, on_fold: Callable[[int], None] = lambda fold: None
) -> CrossValidation:
    """Train a fresh head per fold of `plan` (seed + fold) and pool the held-out metrics."""
    histories = []
    for fold in range(plan.folds):
        histories.append(plan.fit(data, fold, plan.head(fold, params, data.clean.shape[1]), epochs).history)
        on_fold(fold)
    return pool(histories, plan.sizes())
