"""The features step of tune and train-final: open_sources, then prepare_features.

open_sources: scan the dataset, build the backbone and choose where it runs (model.runtime).
prepare_features: list the (split, policy, view) jobs, extract what the cache lacks. Validation
photos are never augmented.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_exp.config import AugmentationPolicy, Config
from fashion_exp.data.augment import IDENTITY
from fashion_exp.data.dataset import TRAIN, VALIDATION, Dataset, report, scan_configured
from fashion_exp.data.images import Decoder
from fashion_exp.features.backbone import Backbone, build_backbone
from fashion_exp.features.cache import FeatureCache
from fashion_exp.features.extract import extract_features, jobs_for_policy
from fashion_exp.features.onnx_files import Calibration, spread
from fashion_exp.features.runtime import Runner, int8_holds, open_runner, resolve
from fashion_exp.stopwatch import Stopwatch


@dataclass
class PreparedFeatures:
    """Cached features of one image size, ready for head training."""

    dataset: Dataset
    report: str  # the dataset check's table, as printed
    backbone: Backbone | None  # None after drop_backbone()
    weights_fingerprint: str
    runtime: str  # where the backbone ran: features.runtime.resolve(model.runtime)
    decoder: Decoder
    train_views: Mapping[str, np.ndarray]  # policy name -> (K views, n train images, dim) or K maps; may be LazyMapping
    val: np.ndarray  # (n validation images, dim), or (n, h, w, c) activation maps (blocks > 0)
    train_clean: np.ndarray | None = None  # (n train images, dim) un-augmented; only when asked for (cross-validation)
    blocks: int = 0  # the backbone's top blocks the features stop below (0: pooled features)
    top: object = None  # those blocks + pooling, pretrained (backbone.fresh_top copies them); kept by drop_backbone

    @property
    def train_labels(self) -> np.ndarray:
        return self.dataset.labels(TRAIN)

    @property
    def val_labels(self) -> np.ndarray:
        return self.dataset.labels(VALIDATION)

    @property
    def n_classes(self) -> int:
        return len(self.dataset.classes)

    def drop_backbone(self) -> None:
        """Free the backbone (Xception's weights, ~80 MB) when only the features are needed."""
        self.backbone = None


class LazyMapping(Mapping):
    """key -> load(key), loaded the first time someone asks: a policy's training views (K, n, dim),
    or a search's features for one blocks value (sets.FeatureSets). A key nobody asks for costs
    nothing; `seconds` is the time spent loading, inside whatever first asked."""

    def __init__(self, keys: list, load: Callable):
        self._keys = list(keys)
        self._load = load
        self._loaded: dict = {}
        self.seconds = 0.0

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._loaded:
            started = time.time()
            self._loaded[key] = self._load(key)
            self.seconds += time.time() - started
        return self._loaded[key]

    def __iter__(self) -> Iterator:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class FeatureSources:
    """What the features are computed from, known before any extraction: the checked dataset and
    the backbone on its runtime (so a caller can name and lock its job from their fingerprints
    first)."""

    dataset: Dataset
    report: str
    runner: Runner
    decoder: Decoder

    @property
    def backbone(self) -> Backbone:
        return self.runner.backbone

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    @property
    def weights_fingerprint(self) -> str:
        """The features' identity: the weights, and the runtime when it is not TensorFlow."""
        return self.runner.fingerprint


def open_sources(
    config: Config,
    image_size: int,
    echo=print,
    clock: Stopwatch | None = None,
    exact: bool = False,
    blocks: int = 0,
    dataset: tuple[Dataset, str] | None = None,
) -> FeatureSources:
    """Scan train and validation (printing the check's table; `dataset` passes an earlier scan and
    its table instead), build the backbone at `image_size` cut below its top `blocks` blocks and
    open it on model.runtime; exact=True (train-final: the shipped Keras model must compute the
    features its head was trained on) never runs it in int8, nor does blocks > 0 (the blocks
    above the cut train on those activations). Laps scan/backbone on `clock`."""
    clock = clock or Stopwatch()
    if dataset is None:
        scanned = scan_configured(config.data, [TRAIN, VALIDATION], config.work_dir)
        dataset = (scanned, report(scanned))
        echo(dataset[1])
    dataset, dataset_report = dataset
    clock.lap("scan_seconds")
    backbone = build_backbone(config.model, image_size, config.seed, blocks)
    decoder = Decoder.for_data(config.data, image_size)
    exact = exact or blocks > 0
    runtime = resolve(config.model.runtime, exact)
    if config.model.runtime not in ("auto", runtime):
        echo(f"model.runtime={config.model.runtime}: using {runtime}, whose features equal the shipped Keras model's")
    photos = calibration(dataset, decoder) if runtime == "onnx-int8" else None
    runner = open_runner(backbone, runtime, config.model.batch_size, config.work_dir, photos)
    if config.model.runtime == "auto" and runtime == "onnx-int8" and not int8_holds(runner, echo):
        runtime = "onnx"
        runner = open_runner(backbone, runtime, config.model.batch_size, config.work_dir)
    cut = f", cut below the top {blocks} block(s)" if blocks else ""
    echo(f"Backbone runtime: {runtime} (model.runtime={config.model.runtime}){cut}")
    clock.lap("backbone_seconds")
    return FeatureSources(dataset, dataset_report, runner, decoder)


def calibration(dataset: Dataset, decoder: Decoder) -> Calibration:
    """int8 calibration photos: training photos spread over the (class-sorted) split, undistorted."""
    paths = dataset.paths(TRAIN)

    def load() -> np.ndarray:
        return np.stack([decoder.load(paths[i]) for i in spread(len(paths))])

    return Calibration(f"{dataset.fingerprint([TRAIN])}-{decoder.key}", load)


VAL_JOB = jobs_for_policy(VALIDATION, IDENTITY)[0]
CLEAN_JOB = jobs_for_policy(TRAIN, IDENTITY)[0]


def jobs_for(policies: dict[str, AugmentationPolicy], clean_train: bool = False) -> list:
    """Every extraction job prepare_features runs (once each, in order): validation, the
    un-augmented training photos when clean_train, then each policy's training views."""
    jobs = [VAL_JOB, CLEAN_JOB] if clean_train else [VAL_JOB]
    return list(dict.fromkeys(jobs + [job for policy in policies.values() for job in jobs_for_policy(TRAIN, policy)]))


def prepare_features(
    config: Config,
    sources: FeatureSources,
    policies: dict[str, AugmentationPolicy],
    clock: Stopwatch | None = None,
    lazy: bool = False,
    clean_train: bool = False,
) -> PreparedFeatures:
    """Features for validation and for every view of every policy on train, from the cache or
    extracted now; lazy=True (the search) leaves each policy's training views to the first trial
    that uses them (LazyMapping); clean_train=True also gives the training photos un-augmented
    (cross-validation scores them). Laps extraction on `clock`."""
    clock = clock or Stopwatch()
    cache = FeatureCache(Path(config.work_dir) / "features")

    def extract(jobs: list) -> dict:
        return extract_features(
            sources.runner, sources.dataset, cache, jobs, sources.decoder, config.model.batch_size, config.seed
        )

    def stack(arrays: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Pooled views as one (K, n, dim) array; activation maps stay K memory-mapped arrays."""
        return list(arrays) if sources.backbone.blocks else np.stack(arrays)

    def views(name: str) -> np.ndarray | list[np.ndarray]:
        jobs = jobs_for_policy(TRAIN, policies[name])
        features = extract(jobs)
        return stack([features[job] for job in jobs])

    if lazy:
        features = extract(jobs_for({}, clean_train))
        train_views: Mapping[str, np.ndarray] = LazyMapping(list(policies), views)
    else:
        features = extract(jobs_for(policies, clean_train))
        train_jobs = {name: jobs_for_policy(TRAIN, policy) for name, policy in policies.items()}
        train_views = {name: stack([features[job] for job in jobs]) for name, jobs in train_jobs.items()}
    clock.lap("extraction_seconds")
    return PreparedFeatures(
        dataset=sources.dataset,
        report=sources.report,
        backbone=sources.backbone,
        weights_fingerprint=sources.weights_fingerprint,
        runtime=sources.runtime,
        decoder=sources.decoder,
        train_views=train_views,
        val=np.asarray(features[VAL_JOB], np.float32),  # in memory: every epoch of every trial scores it
        train_clean=features[CLEAN_JOB] if clean_train else None,
        blocks=sources.backbone.blocks,
        top=sources.backbone.top,
    )
