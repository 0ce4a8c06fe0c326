"""Fitting a head on cached features: K precomputed views of the training photos (epoch e on
view e mod K, freshly shuffled), validated on un-augmented features."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf


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


def map_dataset(
    views: Sequence[np.ndarray], labels: np.ndarray, batch_size: int, first_epoch: int, last_epoch: int, seed: int
) -> tf.data.Dataset:
    """view_dataset for activation maps: K memory-mapped (n, h, w, c) float16 arrays, read one
    batch at a time (memory does not grow with the dataset), as float32."""
    n = len(labels)

    def batches():
        for epoch in range(first_epoch, last_epoch):
            order = np.random.default_rng([seed, epoch]).permutation(n)
            view = views[epoch % len(views)]
            for start in range(0, n, batch_size):
                rows = np.sort(order[start : start + batch_size])  # sorted: sequential reads
                yield np.asarray(view[rows], np.float32), labels[rows]

    signature = (
        tf.TensorSpec((None, *views[0].shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.as_dtype(labels.dtype)),
    )
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)


def training_views(views) -> tf.Tensor | list[np.ndarray]:
    """A policy's K cached views as fit_on_views takes them: pooled features (K, n, dim) as one
    tensor (batched inside the graph); activation maps as K arrays left memory-mapped."""
    if isinstance(views, list | tuple) or np.ndim(views[0]) > 2:
        return list(views)
    return tf.constant(views)


def steps_for(n: int, batch_size: int) -> int:
    """Training steps in one epoch over n rows."""
    return math.ceil(n / batch_size)


@dataclass(frozen=True)
class Rows:
    """What a head fits on: its training views (training_views), their labels, and the
    validation (features, labels) it is scored on each epoch."""

    views: tf.Tensor | list[np.ndarray]
    labels: np.ndarray
    val: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Batching:
    """How a fit's epochs are cut: rows a training step and a validation step, and the seed each
    epoch's shuffle starts from."""

    size: int
    validation_size: int
    seed: int


def fit_on_views(
    head: keras.Model,
    rows: Rows,
    batching: Batching,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: list | None = None,
):
    """Fit `head` on rows.views, K cached views (epoch e on view e mod K; see training_views),
    validating on rows.val; returns History. A head whose optimizer averages its weights (ema) is validated, and
    seen by every callback at an epoch's end (checkpoints), with the averaged weights."""
    if getattr(head.optimizer, "use_ema", False):
        callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True), *(callbacks or [])]
    views, labels, val, size, seed = rows.views, rows.labels, rows.val, batching.size, batching.seed
    if isinstance(views, tf.Tensor):
        batches = view_dataset(views, tf.constant(labels), size, initial_epoch, epochs, seed)
    else:
        batches = map_dataset(views, labels, size, initial_epoch, epochs, seed)
        val = (np.asarray(val[0], np.float32), val[1])
    return head.fit(
        batches,
        steps_per_epoch=steps_for(len(labels), size),
        epochs=epochs,
        initial_epoch=initial_epoch,
        validation_data=val,
        validation_batch_size=batching.validation_size,
        callbacks=callbacks,
        shuffle=False,  # view_dataset shuffles each epoch itself
        verbose=0,
    )
