"""The classification head, trained on cached features.

Head: [top blocks of the backbone + pooling] -> [Dense(size_inner, relu) + Dropout(droprate)] ->
Dense(n_classes) logits. With blocks = 0 the features are pooled already and the head is the
dense part; with blocks > 0 they are a cut's activation maps and the head begins with a trainable
copy of the blocks above the cut (features/backbone.py), learning at block_lr x learning_rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from fashion_exp.hyperparameters import HeadParams


def steps_per_execution(steps_per_epoch: int, most: int = 16) -> int:
    """The largest divisor of steps_per_epoch up to `most`: an execution never spans two epochs."""
    return max(d for d in range(1, min(most, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


@keras.saving.register_keras_serializable(package="fashion_exp")
class BlockAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied by `block_lr` for the variables of `block_layers`
    (the fine-tuned backbone blocks), and is the head's own everywhere else."""

    def __init__(self, block_layers: Sequence[str] = (), block_lr: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.block_layers = list(block_layers)
        self.block_lr = float(block_lr)

    def build(self, variables):
        super().build(variables)
        self._in_blocks = [v.path.split("/")[0] in self.block_layers for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        if self._in_blocks[self._get_variable_index(variable)]:  # (the backend's variable: no path)
            learning_rate = learning_rate * self.block_lr
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "block_layers": self.block_layers, "block_lr": self.block_lr}


def build_head(
    feature_shape: int | Sequence[int],
    n_classes: int,
    params: HeadParams,
    seed: int,
    steps_per_epoch: int,
    top: keras.Model | None = None,
) -> keras.Model:
    """A compiled head: features (n, *feature_shape) -> class logits (n, n_classes).

    top: with params.blocks > 0, a fresh trainable copy of the backbone's top blocks
    (backbone.fresh_top), called in inference mode (BatchNormalization keeps ImageNet statistics).
    steps_per_epoch sets how many training steps run per call into TensorFlow (fewer Python round
    trips: small heads train ~40% faster) without an execution crossing an epoch boundary.
    """
    if params.blocks and top is None:
        raise ValueError(f"blocks={params.blocks} needs the backbone's top blocks")
    keras.utils.set_random_seed(seed)
    shape = (feature_shape,) if isinstance(feature_shape, int) else tuple(feature_shape)
    inputs = keras.Input(shape, name="features")
    x = top(inputs, training=False) if params.blocks else inputs
    if params.size_inner > 0:
        x = keras.layers.Dense(params.size_inner, activation="relu", name="inner")(x)
        x = keras.layers.Dropout(params.droprate, name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, name="logits")(x)
    model = keras.Model(inputs, outputs, name="head")
    optimizer = keras.optimizers.Adam(params.learning_rate)
    if params.blocks:
        blocks = [layer.name for layer in top.layers if layer.weights]
        optimizer = BlockAdam(blocks, params.block_lr, learning_rate=params.learning_rate)
    model.compile(
        optimizer=optimizer,
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


def fit_on_views(
    head: keras.Model,
    views: tf.Tensor | list[np.ndarray],
    labels: np.ndarray,
    val: tuple[np.ndarray, np.ndarray],
    batch_size: int,
    validation_batch_size: int,
    seed: int,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: list | None = None,
):
    """Fit `head` on K cached views (epoch e on view e mod K; see training_views), validating on
    `val`; returns History."""
    if isinstance(views, tf.Tensor):
        batches = view_dataset(views, tf.constant(labels), batch_size, initial_epoch, epochs, seed)
    else:
        batches = map_dataset(views, labels, batch_size, initial_epoch, epochs, seed)
        val = (np.asarray(val[0], np.float32), val[1])
    return head.fit(
        batches,
        steps_per_epoch=steps_for(len(labels), batch_size),
        epochs=epochs,
        initial_epoch=initial_epoch,
        validation_data=val,
        validation_batch_size=validation_batch_size,
        callbacks=callbacks,
        shuffle=False,  # view_dataset shuffles each epoch itself
        verbose=0,
    )
