"""The frozen backbone and the on-disk feature cache.

The base never trains, so an image's pooled features never change: compute them once per
(weights, image size, split, file list, augmentation policy, view) and keep them on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fashion_exp.augment import is_identity, policy_key, random_transform, view_rng
from fashion_exp.config import AugmentationPolicy, ModelConfig
from fashion_exp.data import Dataset, Decoder
from fashion_exp.errors import ConfigError


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
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if weights == "imagenet":
            raise ConfigError(
                f"model.weights=imagenet: could not download the ImageNet weights ({first}); "
                "set FASHION_WEIGHTS to a local xception_notop.weights.h5"
            ) from None
        raise ConfigError(f"model.weights: {weights} is not Xception no-top weights ({first})") from None


def build_backbone(config: ModelConfig, image_size: int, seed: int = 0) -> Backbone:
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


# ---- the cache ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureKey:
    """Everything that changes an entry's features."""

    weights: str
    decoding: str  # Decoder.key: image size and interpolation
    split: str
    files: str  # fingerprint of the ordered file list
    policy: str  # augment.policy_key(); 'identity' for no augmentation
    seed: int  # only matters for augmented views; 0 otherwise
    view: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(vars(self), sort_keys=True).encode()).hexdigest()[:24]


class FeatureCache:
    """One .npy file per FeatureKey; written to a temporary name, then renamed into place."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def path(self, key: FeatureKey) -> Path:
        return self.directory / f"{key.split}-{key.decoding}-{key.digest()}.npy"

    def load(self, key: FeatureKey) -> np.ndarray | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable entry (e.g. disk trouble): recompute and overwrite

    def save(self, key: FeatureKey, features: np.ndarray) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, features, allow_pickle=False)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # only left over if writing failed
        return path


def files_fingerprint(dataset: Dataset, split: str) -> str:
    names = "\n".join(s.path for s in dataset.splits[split])
    return hashlib.sha256(names.encode()).hexdigest()[:16]


# ---- extraction -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One cache entry to fill: a split's images under one policy and view."""

    split: str
    policy_key: str  # augment.policy_key(policy): jobs with equal transforms are equal
    view: int
    policy: AugmentationPolicy = field(compare=False, hash=False)


def _batches(dataset: Dataset, job: Job, decoder: Decoder, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Decoded (and, for augmented jobs, transformed) uint8 batches, decoded in a background thread."""
    samples = dataset.splits[job.split]

    def decode(start: int) -> np.ndarray:
        images = []
        for sample in samples[start : start + batch_size]:
            image = decoder.load(dataset.root / sample.path)
            if not is_identity(job.policy):
                image = random_transform(image, job.policy, view_rng(seed, job.policy, job.view, sample.path))
            images.append(image)
        return np.stack(images)

    with ThreadPoolExecutor(max_workers=2) as pool:
        starts = range(0, len(samples), batch_size)
        yield from pool.map(decode, starts)


def key_for(backbone: Backbone, decoder: Decoder, dataset: Dataset, job: Job, seed: int) -> FeatureKey:
    augmented = not is_identity(job.policy)
    return FeatureKey(
        weights=backbone.fingerprint,
        decoding=decoder.key,
        split=job.split,
        files=files_fingerprint(dataset, job.split),
        policy=policy_key(job.policy),
        seed=seed if augmented else 0,
        view=job.view if augmented else 0,
    )


def extract_features(
    backbone: Backbone,
    dataset: Dataset,
    cache: FeatureCache,
    jobs: list[Job],
    decoder: Decoder | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> dict[Job, np.ndarray]:
    """Features for every job: from the cache where present, else computed and cached.

    Returns {job: float32 array (n_images, dim)}. Shows one progress bar over all images to compute.
    """
    decoder = decoder or Decoder(backbone.image_size)
    if decoder.size != backbone.image_size:
        raise ValueError(f"decoder size {decoder.size} != backbone input {backbone.image_size}")
    results: dict[Job, np.ndarray] = {}
    missing: list[Job] = []
    for job in jobs:
        cached = cache.load(key_for(backbone, decoder, dataset, job, seed))
        if cached is not None and cached.shape[0] == len(dataset.splits[job.split]):
            results[job] = cached
        else:
            missing.append(job)
    total = sum(len(dataset.splits[job.split]) for job in missing)
    with tqdm(total=total, desc=f"Extracting features ({decoder.key})", unit="img", disable=not missing) as bar:
        for job in missing:
            parts = []
            for batch in _batches(dataset, job, decoder, batch_size, seed):
                n = len(batch)
                if n < batch_size:  # pad to a fixed shape: one compiled graph for every batch
                    batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
                parts.append(np.asarray(backbone.model.predict_on_batch(batch), dtype=np.float32)[:n])
                bar.update(n)
            features = np.concatenate(parts) if parts else np.zeros((0, backbone.dim), np.float32)
            cache.save(key_for(backbone, decoder, dataset, job, seed), features)
            results[job] = features
    return results


def jobs_for_policy(split: str, policy: AugmentationPolicy) -> list[Job]:
    """The views a split needs under a policy: one for identity, `views` for augmented ones."""
    views = 1 if is_identity(policy) else policy.views
    return [Job(split, policy_key(policy), view, policy) for view in range(views)]
