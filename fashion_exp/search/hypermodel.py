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

from fashion_exp.config import AugmentationPolicy
from fashion_exp.features.features import Features
from fashion_exp.head.fit import Batching, Rows, fit_on_views, training_views
from fashion_exp.head.model import HeadInputs, new_head
from fashion_exp.hyperparameters import HeadParams, ParamSpace, define_all
from fashion_exp.search.folds import FoldData, FoldPlan, fold_ids, pool
from fashion_exp.search.tuner import StopAtDeadline

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
    trial's number of trained blocks (cuts: blocks -> Features) and augmentation policy (policies:
    name -> policy) and scores it on the (never augmented) validation features, or
    cross-validates it over train + validation when folds >= 2 (held-out training photos are
    scored on their un-augmented features)."""

    def __init__(
        self,
        search: dict[str, ParamSpace],
        cuts: Mapping[int, Features],
        policies: Mapping[str, AugmentationPolicy],
        batch_size: int,
        validation_batch_size: int,
        seed: int,
        folds: int = 0,
    ):
        super().__init__(name="xception_head")
        self.search = search
        self.cuts = cuts
        self.policies = policies
        self.batch_size = batch_size
        self.validation_batch_size = validation_batch_size
        self.seed = seed
        self.folds = folds
        self._plan: FoldPlan | None = None
        self._views: dict[tuple[int, str], object] = {}
        self._fold_data: dict[str, FoldData] = {}

    def plan(self, features: Features) -> FoldPlan:
        """The folds of train + validation (one plan for every trial)."""
        if self._plan is None:
            labels = np.concatenate([features.train_labels, features.val_labels])
            ids = fold_ids(labels, self.folds, self.seed)
            self._plan = FoldPlan(ids, features.n_classes, self.batch_size, self.validation_batch_size, self.seed)
        return self._plan

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        define_all(hp, self.search)

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        params = define_all(hp, self.search)
        features = self.cuts[params.blocks]
        if self.folds:
            return self.plan(features).head(0, params, features.val.shape[1])  # the trial's model is fold 0's head
        shape = features.val.shape[1:]
        inputs = HeadInputs(shape, features.n_classes, self.batch_size, features.top, features.precision)
        return new_head(inputs, params, self.seed, len(features.train_labels))

    def _training_views(self, blocks: int, policy: str):
        if (blocks, policy) not in self._views:  # one tensor (or set of maps) per policy, shared by every trial
            self._views[blocks, policy] = training_views(self.cuts[blocks].views(self.policies[policy]))
        return self._views[blocks, policy]

    def _folds_of(self, features: Features, policy: str) -> FoldData:
        if policy not in self._fold_data:
            views, clean = features.views(self.policies[policy]), features.train_clean
            self._fold_data[policy] = FoldData.join(
                views, clean, features.train_labels, features.val, features.val_labels
            )
        return self._fold_data[policy]

    def fit(self, hp, model, *args, epochs=10, initial_epoch=0, callbacks=None, **kwargs):
        params = HeadParams.from_values(hp.values)
        features = self.cuts[params.blocks]
        if self.folds:
            return self._cross_validate(features, params, model, epochs, callbacks or [])
        views = self._training_views(params.blocks, params.augmentation)
        rows = Rows(views, features.train_labels, (features.val, features.val_labels))
        batching = Batching(self.batch_size, self.validation_batch_size, self.seed)
        return fit_on_views(model, rows, batching, epochs, initial_epoch, callbacks)

    def _cross_validate(self, features: Features, params: HeadParams, model, epochs: int, callbacks: list):
        """Folds 1..k-1 on heads of their own, then fold 0 on `model` with the pooled logs."""
        data, plan = self._folds_of(features, params.augmentation), self.plan(features)
        dim = data.clean.shape[1]
        deadline = [callback for callback in callbacks if isinstance(callback, StopAtDeadline)]
        others = [
            plan.fit(data, fold, plan.head(fold, params, dim), epochs, callbacks=deadline).history
            for fold in range(1, plan.folds)
        ]
        return plan.fit(data, 0, model, epochs, callbacks=[PooledFolds(others, plan.sizes()), *callbacks])


class SpaceModel(kt.HyperModel):
    """Declares the search space and builds nothing: the chief of a distributed search needs its
    oracle to know the space, not the features (its workers build and train the heads)."""

    def __init__(self, search: dict[str, ParamSpace]):
        super().__init__(name="xception_head")
        self.search = search

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        define_all(hp, self.search)

    def build(self, hp: kt.HyperParameters) -> None:
        define_all(hp, self.search)
