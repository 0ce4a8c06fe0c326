"""Building a compiled head: new_head is what the search, cross-validation and train-final call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras

from fashion_exp.features.backbone import fresh_top
from fashion_exp.head.fit import steps_for
from fashion_exp.head.keras_private import variable_index
from fashion_exp.hyperparameters import HeadParams


@dataclass(frozen=True)
class HeadInputs:
    """What every head trained on one set of cached features shares."""

    feature_shape: tuple[int, ...]  # one photo's features: (dim,) pooled, or a cut's (h, w, c)
    n_classes: int
    batch_size: int  # training batch size: sets the steps per epoch
    top: keras.Model | None = None  # the backbone's pretrained top blocks (features cut below them)
    precision: str = "float32"  # the top blocks' Keras dtype policy: float32, mixed_bfloat16 or mixed_float16


def new_head(inputs: HeadInputs, params: HeadParams, seed: int, train_rows: int) -> keras.Model:
    """A compiled head for `params`, initialised with `seed`, that will train on `train_rows` rows;
    with params.blocks > 0 it begins with its own fresh copy of the pretrained top blocks."""
    top = fresh_top(inputs.top, inputs.precision) if params.blocks and inputs.top is not None else None
    steps = steps_for(train_rows, inputs.batch_size)
    return build_head(inputs.feature_shape, inputs.n_classes, params, seed, steps, top)


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
        if self._in_blocks[variable_index(self, variable)]:  # (the backend's variable: no path)
            learning_rate = learning_rate * self.block_lr
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "block_layers": self.block_layers, "block_lr": self.block_lr}


@keras.saving.register_keras_serializable(package="fashion_exp")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits against integer labels smoothed by `smoothing`: Keras'
    CategoricalCrossentropy(label_smoothing=...) on one-hot labels, (1 - s) * the true class's
    log loss + s * the mean log loss over the classes, without one-hot labels in the pipeline.
    (The heads' val_loss is this smoothed loss too.)"""

    def __init__(self, smoothing: float = 0.1, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        log_p = keras.ops.log_softmax(y_pred, axis=-1)
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1, 1)), "int32")
        true_class = -keras.ops.take_along_axis(log_p, labels, axis=-1)[:, 0]
        return (1 - self.smoothing) * true_class - self.smoothing * keras.ops.mean(log_p, axis=-1)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


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
    averaging = {"use_ema": True, "ema_momentum": params.ema} if params.ema else {}  # (head.fit swaps it in)
    optimizer = keras.optimizers.Adam(params.learning_rate, **averaging)
    if params.blocks:
        blocks = [layer.name for layer in top.layers if layer.weights]
        optimizer = BlockAdam(blocks, params.block_lr, learning_rate=params.learning_rate, **averaging)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=optimizer,
        loss=SmoothedSparseCrossentropy(params.label_smoothing) if params.label_smoothing else loss,
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution(steps_per_epoch),
    )
    return model
