"""The features step of tune and train-final: open_sources, then prepare_features.

open_sources: scan the dataset, build the backbone. prepare_features: list the (split, policy,
view) jobs, extract what the cache lacks. Validation photos are never augmented.
"""

from __future__ import annotations

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
from fashion_exp.stopwatch import Stopwatch


@dataclass
class PreparedFeatures:
    """Cached features of one image size, ready for head training."""

    dataset: Dataset
    report: str  # the dataset check's table, as printed
    backbone: Backbone | None  # None after drop_backbone()
    weights_fingerprint: str
    decoder: Decoder
    train_views: dict[str, np.ndarray]  # policy name -> (K views, n train images, dim)
    val: np.ndarray  # (n validation images, dim)

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


@dataclass
class FeatureSources:
    """What the features are computed from, known before any extraction: the checked dataset and
    the backbone (so a caller can name and lock its job from their fingerprints first)."""

    dataset: Dataset
    report: str
    backbone: Backbone
    decoder: Decoder

    @property
    def weights_fingerprint(self) -> str:
        return self.backbone.fingerprint


def open_sources(config: Config, image_size: int, echo=print, clock: Stopwatch | None = None) -> FeatureSources:
    """Scan train and validation (printing the check's table) and build the backbone at `image_size`;
    laps scan/backbone on `clock`."""
    clock = clock or Stopwatch()
    dataset = scan_configured(config.data, [TRAIN, VALIDATION], config.work_dir)
    dataset_report = report(dataset)
    echo(dataset_report)
    clock.lap("scan_seconds")
    backbone = build_backbone(config.model, image_size, config.seed)
    clock.lap("backbone_seconds")
    return FeatureSources(dataset, dataset_report, backbone, Decoder.for_data(config.data, image_size))


def prepare_features(
    config: Config, sources: FeatureSources, policies: dict[str, AugmentationPolicy], clock: Stopwatch | None = None
) -> PreparedFeatures:
    """Features for validation and for every view of every policy on train, from the cache or
    extracted now; laps extraction on `clock`."""
    clock = clock or Stopwatch()
    val_job = jobs_for_policy(VALIDATION, IDENTITY)[0]
    train_jobs = {name: jobs_for_policy(TRAIN, policy) for name, policy in policies.items()}
    features = extract_features(
        sources.backbone,
        sources.dataset,
        FeatureCache(Path(config.work_dir) / "features"),
        [val_job, *[job for jobs in train_jobs.values() for job in jobs]],
        sources.decoder,
        config.model.batch_size,
        config.seed,
    )
    clock.lap("extraction_seconds")
    return PreparedFeatures(
        dataset=sources.dataset,
        report=sources.report,
        backbone=sources.backbone,
        weights_fingerprint=sources.weights_fingerprint,
        decoder=sources.decoder,
        train_views={name: np.stack([features[job] for job in jobs]) for name, jobs in train_jobs.items()},
        val=features[val_job],
    )
