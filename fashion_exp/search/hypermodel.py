"""The keras-tuner HyperModels of a search: the search space -> a head trained on cached features.

A trial is scored one of two ways (tuner.folds):
  0       the head trains on the training photos' views and is scored on the validation split;
  k >= 2  k heads, one per fold of train + validation (fashion_exp/search/folds.py). The head
          keras-tuner built is fold 0's; before the tuner's callbacks read an epoch's logs, its
          val_accuracy / val_loss become the pooled held-out values of all k folds, so the trial's
          curves, score, best epoch and checkpoint (fold 0's head at that epoch) all follow the
          cross-validated signal.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from fashion_exp.hyperparameters import HeadParams, ParamSpace, define_all
from fashion_exp.search.folds import FoldData, FoldPlan, fold_ids, pool
from fashion_exp.search.head import build_head, fit_on_views, steps_for

POOLED = ("val_accuracy", "val_loss")


class PooledFolds(keras.callbacks.Callback):
    """Replaces this fold's held-out metrics in each epoch's logs by every fold's pooled values."""

    def __init__(self, others: list[dict[str, list[float]]], sizes: list[int]):
        super().__init__()
        self.others = others  # the other folds' finished histories
        self.sizes = sizes  # rows held out by this fold, then by each other fold
        self.own: dict[str, list[float]] = {key: [] for key in POOLED}

    def on_epoch_end(self, epoch, logs=None):
        for key in POOLED:
            self.own[key].append(float(logs[key]))
        histories = [self.own, *({key: h[key][: epoch + 1] for key in POOLED} for h in self.others)]
        pooled = pool(histories, self.sizes)
        logs["val_accuracy"] = pooled.val_accuracy[-1]
        logs["val_loss"] = pooled.val_loss[-1]


class HeadHyperModel(kt.HyperModel):
    """Builds a head from the search space; fit() trains it on the cached features of the
    trial's augmentation policy and scores it on the (never augmented) validation features, or
    cross-validates it over train + validation when folds >= 2 (train_clean is then required:
    the training photos' un-augmented features, on which their held-out rows are scored)."""

    def __init__(
        self,
        search: dict[str, ParamSpace],
        train_views: Mapping[str, np.ndarray],
        train_labels: np.ndarray,
        val_features: np.ndarray,
        val_labels: np.ndarray,
        n_classes: int,
        batch_size: int,
        validation_batch_size: int,
        seed: int,
        folds: int = 0,
        train_clean: np.ndarray | None = None,
    ):
        super().__init__(name="xception_head")
        if folds and train_clean is None:
            raise ValueError("cross-validation needs the training photos' un-augmented features")
        self.search = search
        self.train_views = train_views
        self.train_labels = train_labels
        self.val = (val_features, val_labels)
        self.n_classes = n_classes
        self.batch_size = batch_size
        self.validation_batch_size = validation_batch_size
        self.seed = seed
        self.train_clean = train_clean
        self.plan = None
        if folds:
            ids = fold_ids(np.concatenate([train_labels, val_labels]), folds, seed)
            self.plan = FoldPlan(ids, n_classes, batch_size, validation_batch_size, seed)
        self._tensors: dict[str, tf.Tensor] = {}
        self._fold_data: dict[str, FoldData] = {}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        params = define_all(hp, self.search)
        dim = self.val[0].shape[-1]  # not the train views: they may not be extracted yet
        if self.plan:
            return self.plan.head(0, params, dim)  # the trial's model is fold 0's head
        return build_head(dim, self.n_classes, params, self.seed, steps_for(len(self.train_labels), self.batch_size))

    def _views(self, policy: str) -> tf.Tensor:
        if policy not in self._tensors:  # one tensor per policy, shared by every trial
            self._tensors[policy] = tf.constant(self.train_views[policy])
        return self._tensors[policy]

    def _folds_of(self, policy: str) -> FoldData:
        if policy not in self._fold_data:
            self._fold_data[policy] = FoldData.join(
                self.train_views[policy], self.train_clean, self.train_labels, *self.val
            )
        return self._fold_data[policy]

    def fit(self, hp, model, *args, epochs=10, initial_epoch=0, callbacks=None, **kwargs):
        params = HeadParams.from_values(hp.values)
        if self.plan:
            return self._cross_validate(params, model, epochs, callbacks or [])
        return fit_on_views(
            model,
            self._views(params.augmentation),
            self.train_labels,
            self.val,
            self.batch_size,
            self.validation_batch_size,
            self.seed,
            epochs,
            initial_epoch,
            callbacks,
        )

    def _cross_validate(self, params: HeadParams, model: keras.Model, epochs: int, callbacks: list):
        """Folds 1..k-1 on heads of their own, then fold 0 on `model` with the pooled logs."""
        data, plan = self._folds_of(params.augmentation), self.plan
        dim = data.clean.shape[1]
        others = [plan.fit(data, fold, plan.head(fold, params, dim), epochs).history for fold in range(1, plan.folds)]
        return plan.fit(data, 0, model, epochs, callbacks=[PooledFolds(others, plan.sizes()), *callbacks])


class SpaceModel(kt.HyperModel):
    """Declares the search space and builds nothing: the chief of a distributed search needs its
    oracle to know the space, not the features (its workers build and train the heads)."""

    def __init__(self, search: dict[str, ParamSpace]):
        super().__init__(name="xception_head")
        self.search = search

    def build(self, hp: kt.HyperParameters) -> None:
        define_all(hp, self.search)
