"""The frozen backbone: uint8 images in, pooled features out (preprocessing inside, training=False)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_exp.config import ModelConfig
from fashion_exp.errors import ConfigError, first_line


@dataclass
class Backbone:
    """A Keras model: uint8 RGB images (n, s, s, 3) -> pooled features (n, dim)."""

    model: object
    fingerprint: str
    image_size: int

    @property
    def dim(self) -> int:
        return int(self.model.output_shape[-1])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _xception_base(weights: str, image_size: int):
    import keras

    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model.weights: no weights file at {path.resolve()} "
                "(set FASHION_WEIGHTS or model.weights= to an Xception no-top .weights.h5, or use imagenet)"
            )
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


def build_backbone(config: ModelConfig, image_size: int, seed: int) -> Backbone:
    """The frozen feature extractor: preprocessing inside, base called with training=False, GAP."""
    import keras

    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    if config.backbone == "tiny":
        init = keras.initializers.GlorotUniform(seed=seed)
        x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", kernel_initializer=init)(x)
        x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", kernel_initializer=init)(x)
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        model = keras.Model(inputs, outputs, name="tiny_backbone")
        digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights()))
        fingerprint = f"tiny-{digest.hexdigest()[:16]}"
    else:
        base = _xception_base(config.weights, image_size)
        base.trainable = False
        x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="preprocess")(inputs)  # = xception.preprocess_input
        x = base(x, training=False)
        outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        model = keras.Model(inputs, outputs, name="xception_features")
        if config.weights == "imagenet":
            fingerprint = "xception-imagenet"
        else:
            fingerprint = f"xception-{file_sha256(Path(config.weights).expanduser())[:16]}"
    model.trainable = False
    return Backbone(model=model, fingerprint=fingerprint, image_size=image_size)
