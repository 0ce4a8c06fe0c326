"""The frozen backbone: uint8 images in, cached features out (preprocessing inside, training=False).

With blocks = 0 the features are the pooled output (n, dim). With blocks = b > 0 the backbone is
cut below its top b blocks: the frozen part (`model`) gives that cut's activation maps
(n, h, w, c), and `top` (the b blocks + pooling, ImageNet weights) is what a head with
fine-tuning trains on them. hyperparameters.CUTS names each cut's first layer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashion_exp.config import ModelConfig, weights_file
from fashion_exp.errors import ConfigError, first_line
from fashion_exp.hyperparameters import CUTS, max_blocks


@dataclass
class Backbone:
    """A Keras model: uint8 RGB images (n, s, s, 3) -> features: pooled (n, dim) when blocks is 0,
    else the cut's activation maps (n, h, w, c); `top` turns those into pooled features."""

    model: object
    fingerprint: str
    image_size: int
    blocks: int = 0
    top: object = None  # keras.Model (h, w, c) -> (dim,): the trainable blocks + pooling (blocks > 0)
    # fewer blocks b -> keras.Model: this cut's maps -> the maps below the top b blocks (b = 0: pooled
    # features), the frozen pretrained layers between (final/cuts.py: a shallower cut's head reads them)
    bridges: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """One image's cached features: (dim,) or (h, w, c)."""
        return tuple(int(d) for d in self.model.output_shape[1:])


def fresh_top(pretrained, precision: str = "float32"):
    """A trainable copy of a backbone's top blocks (Backbone.top) with their pretrained weights
    (each trial and restart trains its own); BatchNormalization layers stay frozen. Its separable
    convolutions are layers.MatmulSeparableConv2D (the same numbers, trained 2x faster on a CPU);
    its layers compute in `precision`, a Keras dtype policy (mixed_bfloat16: bf16 compute, float32
    weights)."""
    import keras

    from fashion_exp.features.layers import fast_copy

    top = fast_copy(pretrained, precision)
    top.trainable = True
    for layer in top.layers:  # (the model's flag does not reach layers cloned frozen)
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    return top


@dataclass
class _Split:
    model: object  # the frozen part: images -> cut activations
    top: object  # cut activations -> pooled features
    bridges: dict  # Backbone.bridges


def _split(inputs, preprocess, base, blocks: int, backbone: str, name: str) -> _Split:
    """The backbone cut below its top `blocks` blocks. Every part is made from `base`'s own graph
    (a model made from the inside of another, `top`, starts from a copy of its input, which base's
    tensors do not lead from)."""
    import keras

    cut = base.get_layer(CUTS[backbone][blocks]).input
    trunk = keras.Model(base.input, cut, name=f"{name}_trunk")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    top = keras.Model(cut, pooled, name=f"top_{blocks}_blocks")
    bridges = {}
    for fewer in range(blocks):
        end = base.get_layer(CUTS[backbone][fewer]).input if fewer else pooled
        bridges[fewer] = keras.Model(cut, end, name=f"frozen_cut{blocks}_to_cut{fewer}")
        bridges[fewer].trainable = False
    model = keras.Model(inputs, trunk(preprocess(inputs), training=False), name=f"{name}_cut{blocks}")
    return _Split(model, top, bridges)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _xception_base(weights: str, image_size: int):
    import keras

    path = weights_file(weights)
    if path is not None:
        weights = str(path)
    try:
        return keras.applications.Xception(include_top=False, weights=weights, input_shape=(image_size, image_size, 3))
    except Exception as err:  # download failures and unreadable files come in many types
        if weights == "imagenet":
            raise ConfigError(
                f"model.weights=imagenet: could not download the ImageNet weights ({first_line(err)}); "
                "set FASHION_WEIGHTS to a local xception_notop.weights.h5"
            ) from None
        raise ConfigError(f"model.weights: {weights} is not Xception no-top weights ({first_line(err)})") from None


def _tiny_base(image_size: int, seed: int):
    import keras

    init = keras.initializers.GlorotUniform(seed=seed)
    x = inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init, name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init, name="mid")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", kernel_initializer=init, name="conv2")(x)
    return keras.Model(inputs, x, name="tiny")


def build_backbone(config: ModelConfig, image_size: int, seed: int, blocks: int = 0) -> Backbone:
    """The frozen feature extractor: preprocessing inside, base called with training=False, then
    GAP (blocks = 0) or a cut below the top `blocks` blocks (see the module docstring)."""
    import keras

    if not 0 <= blocks <= max_blocks(config.backbone):
        most = max_blocks(config.backbone)
        raise ConfigError(f"blocks: {config.backbone} has {most} trainable top block(s), not {blocks}")
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    preprocess = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")  # = xception.preprocess_input
    if config.backbone == "tiny":
        base = _tiny_base(image_size, seed)
        digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in base.get_weights()))
        fingerprint = f"tiny-{digest.hexdigest()[:16]}"
    else:
        base = _xception_base(config.weights, image_size)
        if config.weights == "imagenet":
            fingerprint = "xception-imagenet"
        else:
            fingerprint = f"xception-{file_sha256(Path(config.weights).expanduser())[:16]}"
    base.trainable = False
    name = f"{config.backbone}_features"
    top, bridges = None, {}
    if blocks:
        split = _split(inputs, preprocess, base, blocks, config.backbone, name)
        model, top, bridges = split.model, split.top, split.bridges
        fingerprint = f"{fingerprint}-cut{blocks}"  # other features: other cache entries, ONNX files, search ids
    else:
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(base(preprocess(inputs), training=False))
        model = keras.Model(inputs, outputs, name=name)
    model.trainable = False
    return Backbone(model, fingerprint, image_size, blocks, top, bridges)


def feature_shape_at(backbone: str, image_size: int, blocks: int) -> tuple[int, ...]:
    """One image's cached features at this size and cut, from the layers' shapes alone (no weights
    are read: a plan can size the disk a later stage needs in about a second)."""
    import keras

    if backbone == "tiny":
        base = _tiny_base(image_size, 0)
    else:
        base = keras.applications.Xception(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if not blocks:
        return (int(base.output_shape[-1]),)
    return tuple(int(d) for d in base.get_layer(CUTS[backbone][blocks]).input.shape[1:])
