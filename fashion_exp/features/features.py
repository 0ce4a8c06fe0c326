"""Features: one object per (image size, cut) that tune and train-final train heads on.

Built once from the checked dataset (scan), the model section, a decoder and the work folder, it
holds the backbone on its runtime and the cache. What it computes is asked for as jobs (one per
split, augmentation policy and view: jobs_for); each job's cache key is derived once and shared
by the disk check (missing_bytes, check_disk) and the extraction (get). Nothing is extracted
before someone asks: `val` and `train_clean` on first use, a policy's training views in `views`.

blocks = 0: heads train on pooled features (a few KB a photo). blocks = b > 0: heads train the
top b blocks on the activation maps below them (51,200 bytes a photo at 150px, 204,800 at 299px
for Xception's block14 cut), cached like pooled features.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from fashion_exp.config import AugmentationPolicy, DataConfig, ModelConfig
from fashion_exp.data.augment import IDENTITY
from fashion_exp.data.dataset import TRAIN, VALIDATION, Dataset, report, scan_configured
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.features.backbone import Backbone, build_backbone
from fashion_exp.features.cache import FeatureCache, bytes_per_image
from fashion_exp.features.choice import CheckPhotos, check_photos
from fashion_exp.features.extract import Extractor, Job, jobs_for_policy
from fashion_exp.features.onnx_files import Calibration, calibration
from fashion_exp.features.runtime import EXACT, Runner, choose_runner, open_runner
from fashion_exp.hardware import gpu_visible, train_policy
from fashion_exp.screen import say
from fashion_exp.writers import size_text

VAL_JOB = jobs_for_policy(VALIDATION, IDENTITY)[0]
CLEAN_JOB = jobs_for_policy(TRAIN, IDENTITY)[0]


@dataclass(frozen=True)
class Scan:
    """The checked training and validation photos, and the check's table as printed."""

    dataset: Dataset
    report: str


def scan(data: DataConfig, work_dir: Path | str) -> Scan:
    """Check the training and validation splits and print the check's table."""
    dataset = scan_configured(data, [TRAIN, VALIDATION], work_dir)
    checked = Scan(dataset, report(dataset))
    say(checked.report)
    return checked


def jobs_for(policies: dict[str, AugmentationPolicy], clean_train: bool = False) -> list[Job]:
    """The jobs heads on these policies need (once each, in order): validation, the un-augmented
    training photos when clean_train (cross-validation scores them), each policy's training views."""
    jobs = [VAL_JOB, CLEAN_JOB] if clean_train else [VAL_JOB]
    return list(dict.fromkeys(jobs + [job for policy in policies.values() for job in jobs_for_policy(TRAIN, policy)]))


@dataclass(frozen=True)
class RuntimePhotos:
    """The photos choosing a runtime may need, decoded only if it does: int8's calibration photos,
    and the photos auto's check runs on."""

    dataset: Dataset
    decoder: Decoder
    model: ModelConfig

    def calibration(self) -> Calibration:
        return calibration(self.dataset, self.decoder, self.model)

    def check(self) -> CheckPhotos:
        return check_photos(self.dataset, self.decoder, self.model.auto_check_photos)


def choose_runtime(
    scanned: Scan,
    model: ModelConfig,
    decoder: Decoder,
    work_dir: Path | str,
    *,
    seed: int,
    blocks: int = 0,
    exact=False,
) -> Runner:
    """A job's step: build the backbone at the decoder's size, cut below its top `blocks` blocks, and
    choose where it runs (model.runtime; auto measures once per CPU: features/choice.py).
    exact=True (train-final: the shipped Keras model must compute the features its head was trained
    on) never runs it in lower precision; a cut (blocks > 0) never runs in int8 (features/runtime.py)."""
    backbone = build_backbone(model, decoder.size, seed, blocks)
    photos = RuntimePhotos(scanned.dataset, decoder, model)
    return choose_runner(model, backbone, work_dir, exact, photos.calibration, photos.check)


class Features:
    """The features of one image size and cut, from the cache or extracted when first asked for."""

    def __init__(self, scanned: Scan, extractor: Extractor, precision: str = "float32"):
        self.scanned = scanned
        self.extractor = extractor
        self.precision = precision  # the Keras dtype policy heads train the top blocks under (blocks > 0)
        self.seconds = 0.0  # time spent in get(): loading or extracting
        self._got: dict[Job, np.ndarray] = {}

    @classmethod
    def on(cls, scanned: Scan, runner: Runner, decoder: Decoder, work_dir: Path | str, model: ModelConfig, seed: int):
        """The features `runner` computes for these photos, through work_dir's cache: nothing is
        computed now (choose_runtime, the step before, builds the backbone and picks where it runs)."""
        cache = FeatureCache(Path(work_dir) / "features")
        blocks = runner.backbone.blocks
        precision = train_policy(model.train_precision, runner.cpu, gpu_visible()) if blocks else "float32"
        if blocks:
            say(f"Fine-tuned blocks train under {precision} (model.train_precision={model.train_precision})")
        return cls(scanned, Extractor(runner, scanned.dataset, decoder, cache, model.batch_size, seed), precision)

    def on_runtime(self, runtime: str) -> Features | None:
        """The same photos, size and cut on another runtime (fp32 or OpenVINO bf16), sharing this
        cache: a search's features, on which train-final confirms the trial it reuses. None for
        int8 (its file depends on calibration photos this command does not choose)."""
        if runtime == self.runtime:
            return self
        if runtime not in (*EXACT, "openvino-bf16"):
            return None
        ex, runner = self.extractor, self.extractor.runner
        other = open_runner(runner.backbone, runtime, ex.batch_size, ex.cache.directory.parent, cpu=runner.cpu)
        return Features(
            self.scanned, Extractor(other, ex.dataset, ex.decoder, ex.cache, ex.batch_size, ex.seed), self.precision
        )

    # What the features are computed from.
    @property
    def dataset(self) -> Dataset:
        return self.scanned.dataset

    @property
    def backbone(self) -> Backbone:
        return self.extractor.runner.backbone

    @property
    def decoder(self) -> Decoder:
        return self.extractor.decoder

    @property
    def runtime(self) -> str:
        return self.extractor.runner.runtime

    @property
    def runtime_why(self) -> str:
        """Why the backbone runs on `runtime`, in words (logged with the run)."""
        return self.extractor.runner.why

    @property
    def fingerprint(self) -> str:
        """The features' identity: the weights and cut, and the runtime when it is not TensorFlow."""
        return self.extractor.runner.fingerprint

    @property
    def blocks(self) -> int:
        return self.backbone.blocks

    @property
    def top(self):
        """The backbone's pretrained top blocks + pooling (blocks > 0), for heads that fine-tune them."""
        return self.backbone.top

    @property
    def n_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def train_labels(self) -> np.ndarray:
        return self.dataset.labels(TRAIN)

    @property
    def val_labels(self) -> np.ndarray:
        return self.dataset.labels(VALIDATION)

    # What they cost and what they are.
    def missing_bytes(self, jobs: list[Job]) -> int:
        """Disk the cache entries of `jobs` still need."""
        size = bytes_per_image(self.backbone.feature_shape)
        cache = self.extractor.cache
        return sum(size * self.extractor.rows(job) for job in jobs if not cache.path(self.extractor.key(job)).is_file())

    def get(self, jobs: list[Job]) -> dict[Job, np.ndarray]:
        """Every job's features (memory-mapped), extracting what the cache lacks."""
        wanted = [job for job in jobs if job not in self._got]
        if wanted:
            started = time.time()
            self._got.update(self.extractor.run(wanted))
            self.seconds += time.time() - started
        return {job: self._got[job] for job in jobs}

    @cached_property
    def val(self) -> np.ndarray:
        """(n validation photos, dim) float32 in memory (every epoch of every trial scores it), or
        (n, h, w, c) activation maps."""
        return np.asarray(self.get([VAL_JOB])[VAL_JOB], np.float32)

    @property
    def train_clean(self) -> np.ndarray:
        """(n training photos, dim): the training photos un-augmented."""
        return self.get([CLEAN_JOB])[CLEAN_JOB]

    def views(self, policy: AugmentationPolicy) -> np.ndarray | list[np.ndarray]:
        """A policy's training views: pooled features as one (K, n, dim) array, activation maps as
        K memory-mapped (n, h, w, c) arrays."""
        jobs = jobs_for_policy(TRAIN, policy)
        got = self.get(jobs)
        arrays = [got[job] for job in jobs]
        return arrays if self.blocks else np.stack(arrays)


def check_disk(
    work_dir: Path | str,
    cuts: dict[int, Features],
    jobs: list[Job],
    what: str = "the search's",
    remedy: str = "drop search.blocks values",
) -> None:
    """Say what the cached features of every cut take; raise UserError (one line) before any
    work when the disk under work_dir cannot hold what `jobs` still need (what other extractors are
    writing now is already taken from the free space: each entry's blocks are reserved when its
    file is made, cache.reserve) (`what`: whose
    features; `remedy`: the last of the ways out the message offers)."""
    needed = {count: features.missing_bytes(jobs) for count, features in cuts.items()}
    for count, features in cuts.items():
        if count:
            shape = "x".join(map(str, features.backbone.feature_shape))
            size = bytes_per_image(features.backbone.feature_shape)
            say(
                f"blocks={count}: activations {shape} cached in float16, {size:,} bytes a photo, "
                f"{size_text(needed[count])} still to extract"
            )
    directory = Path(work_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    total = sum(needed.values())
    if total > free:
        raise UserError(
            f"work_dir {directory}: {what} cached features need {size_text(total)} more and the disk has "
            f"{size_text(free)} free; free some space, set work_dir= on a larger disk, or {remedy}"
        )
