"""The classification head, trained on cached features.

Head: [Dense(size_inner, relu) + Dropout(droprate)] -> Dense(n_classes) logits.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from fashion_exp.hyperparameters import HeadParams


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
