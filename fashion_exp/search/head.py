"""The classification head and its keras-tuner HyperModel, trained on cached features.

Head: [Dense(size_inner, relu) + Dropout(droprate)] -> Dense(n_classes) logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf

from fashion_exp.hyperparameters import HeadParams, ParamSpace, define_all


def steps_per_execution(steps_per_epoch: int, most: int = 16) -> int:
    """The largest divisor of steps_per_epoch up to `most`: an execution never spans two epochs."""
    return max(d for d in range(1, min(most, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


def build_head(feature_dim: int, n_classes: int, params: HeadParams, seed: int, steps_per_epoch: int) -> keras.Model:
    """A compiled head: pooled features (n, feature_dim) -> class logits (n, n_classes).

    steps_per_epoch sets how many training steps run per call into TensorFlow (fewer Python round
    trips: small heads train ~40% faster) without an execution crossing an epoch boundary.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    if params.size_inner > 0:
        x = keras.layers.Dense(params.size_inner, activation="relu", name="inner")(x)
        x = keras.layers.Dropout(params.droprate, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, name="logits")(x)
    model = keras.Model(inputs, outputs, name="head")
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(steps_per_epoch),
    )
    return model


def view_dataset(
    views: tf.Tensor, labels: tf.Tensor, batch_size: int, first_epoch: int, last_epoch: int, seed: int
) -> tf.data.Dataset:
    """Batches for epochs [first_epoch, last_epoch): epoch e uses view e mod K, freshly shuffled.

    views: (K, n, dim) features of K precomputed augmented views; labels: (n,).
    Fit with steps_per_epoch=ceil(n / batch_size) so Keras reads the epochs one after another.
    """
    n_views = int(views.shape[0])
    n = int(views.shape[1])

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        view = tf.gather(views, epoch % n_views)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
        return batches.map(lambda idx: (tf.gather(view, idx), tf.gather(labels, idx)))

    return tf.data.Dataset.range(first_epoch, last_epoch).flat_map(one_epoch).prefetch(2)


def steps_for(n: int, batch_size: int) -> int:
    """Training steps in one epoch over n rows."""
    return math.ceil(n / batch_size)


def fit_on_views(
    head: keras.Model,
    views: tf.Tensor,
    labels: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    validation_batch_size: int,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: list | None = None,
):
    """Fit `head` on K cached views (epoch e on view e mod K), validating on `val`; returns History."""
    return head.fit(
        view_dataset(views, tf.constant(labels), batch_size, initial_epoch, epochs, seed),
        steps_per_epoch=steps_for(len(labels), batch_size),
        epochs=epochs,
        initial_epoch=initial_epoch,
        validation_data=val,
        validation_batch_size=validation_batch_size,
        callbacks=callbacks,
        shuffle=False,  # view_dataset shuffles each epoch itself
        verbose=0,
    )


class HeadHyperModel(kt.HyperModel):
    """Builds a head from the search space; fit() trains it on the cached features of the
    trial's augmentation policy and validates on the (never augmented) validation features."""

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
    ):
        super().__init__(name="xception_head")
        self.search = search
        self.train_views = train_views
        self.train_labels = train_labels
        self.val = (val_features, val_labels)
        self.n_classes = n_classes
        self.batch_size = batch_size
        self.validation_batch_size = validation_batch_size
        self.seed = seed
        self._tensors: dict[str, tf.Tensor] = {}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        params = define_all(hp, self.search)
        dim = self.val[0].shape[-1]  # not the train views: they may not be extracted yet
        steps = steps_for(len(self.train_labels), self.batch_size)
        return build_head(dim, self.n_classes, params, self.seed, steps)

    def _views(self, policy: str) -> tf.Tensor:
        if policy not in self._tensors:  # one tensor per policy, shared by every trial
            self._tensors[policy] = tf.constant(self.train_views[policy])
        return self._tensors[policy]

    def fit(self, hp, model, *args, epochs=10, initial_epoch=0, callbacks=None, **kwargs):
        views = self._views(HeadParams.from_values(hp.values).augmentation)
        return fit_on_views(
            model,
            views,
            self.train_labels,
            self.val,
            self.batch_size,
            self.validation_batch_size,
            self.seed,
            epochs,
            initial_epoch,
            callbacks,
        )


class SpaceModel(kt.HyperModel):
    """Declares the search space and builds nothing: the chief of a distributed search needs its
    oracle to know the space, not the features (its workers build and train the heads)."""

    def __init__(self, search: dict[str, ParamSpace]):
        super().__init__(name="xception_head")
        self.search = search

    def build(self, hp: kt.HyperParameters) -> None:
        define_all(hp, self.search)
