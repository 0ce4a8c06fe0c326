"""model.runtime=auto on a CPU, for the search: the fastest runtime whose features pass a check on
this machine, against fp32 ONNX.

The check runs every candidate and fp32 on the same photos, spread over the training and
validation splits (model.auto_check_photos of each): its speed (images a second, after one
warm-up batch), the mean cosine of its features to fp32's on all of them, and the top-1 agreement
with fp32 on the validation photos of a ridge-regression head fitted on fp32's features of the
training photos. A candidate passes with cosine >= model.auto_min_cosine and agreement >=
model.auto_min_agreement. What was measured is kept in work_dir/backbones, one record per
backbone, image size, CPU flags and photo set, so each machine kind measures once; the thresholds
are applied to the record at every start.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fashion_exp.config import ModelConfig
from fashion_exp.data.dataset import TRAIN, VALIDATION, Dataset
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.features.onnx_files import mean_cosine, spread

RIDGE = 0.1  # the check head's ridge penalty, relative to the mean squared norm of a standardized row


@dataclass(frozen=True)
class CheckPhotos:
    """The photos auto's check runs on: `identity` names them without decoding anything; `load`
    gives (training images, their labels, validation images)."""

    identity: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]


def check_photos(dataset: Dataset, decoder: Decoder, count: int) -> CheckPhotos:
    """`count` training photos and `count` validation photos, each spread over its class-sorted split."""
    train, val = dataset.paths(TRAIN), dataset.paths(VALIDATION)
    train_ids, val_ids = spread(len(train), count), spread(len(val), count)

    def load():
        labels = np.asarray(dataset.labels(TRAIN))[train_ids]
        train_images = np.stack([decoder.load(train[i]) for i in train_ids])
        return train_images, labels, np.stack([decoder.load(val[i]) for i in val_ids])

    return CheckPhotos(f"{dataset.fingerprint([TRAIN, VALIDATION])}-{decoder.key}-{count}", load)


@dataclass(frozen=True)
class Measured:
    """One runtime on the check photos; `error` says why it could not run (then it never passes)."""

    runtime: str
    precision: str  # what it computed in (OpenVINO runs f32 where asked for bf16 on a CPU without BF16)
    images_per_s: float
    cosine: float
    agreement: float
    error: str = ""

    def passes(self, model: ModelConfig) -> bool:
        return not self.error and self.cosine >= model.auto_min_cosine and self.agreement >= model.auto_min_agreement

    def verdict(self, model: ModelConfig, reference: Measured) -> str:
        if self.error:
            return f"{self.runtime} could not run ({self.error})"
        numbers = f"{self.speedup(reference):.2f}x fp32, cosine {self.cosine:.4f}, agreement {self.agreement:.3f}"
        if not self.passes(model):
            return f"{self.runtime} fails the check ({numbers})"
        return f"{self.runtime} passes ({numbers})"

    def speedup(self, reference: Measured) -> float:
        return self.images_per_s / reference.images_per_s


def ridge_head(features: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A linear classifier (one-hot ridge regression on standardized features, solved in its dual
    form: fewer photos than feature dimensions) -> scores (n, classes) for new features."""
    mean, scale = features.mean(0), features.std(0) + 1e-6
    x = (features - mean) / scale
    targets = np.eye(int(labels.max()) + 1)[labels]
    gram = x @ x.T
    penalty = RIDGE * np.trace(gram) / len(x)
    coef = x.T @ np.linalg.solve(gram + penalty * np.eye(len(x)), targets)
    return lambda new: ((new - mean) / scale) @ coef


def agreement(reference_train, labels, reference_val, candidate_val) -> float:
    """Top-1 agreement on the validation rows of a ridge head fitted on the reference's training rows."""
    head = ridge_head(_pooled(reference_train), labels)
    return float(np.mean(head(_pooled(reference_val)).argmax(1) == head(_pooled(candidate_val)).argmax(1)))


def _pooled(features: np.ndarray) -> np.ndarray:
    """(n, dim) float64: activation maps averaged over their positions."""
    features = np.asarray(features, np.float64)
    return features.reshape(len(features), -1, features.shape[-1]).mean(1) if features.ndim > 2 else features


def run_on(runner, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, float]:
    """(features, images a second): one untimed warm-up batch (sessions compile, files are made),
    then every image."""
    runner.features(images[:batch_size])
    started = time.perf_counter()
    features = np.concatenate([runner.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return features, len(images) / max(time.perf_counter() - started, 1e-9)


def measure(reference, candidates: list, photos: CheckPhotos, batch_size: int, echo) -> list[Measured]:
    """fp32 (`reference`) then each candidate on the check photos."""
    train, labels, val = photos.load()
    images = np.concatenate([train, val])
    echo(f"Measuring {len(candidates) + 1} backbone runtimes on {len(train)} + {len(val)} photos (once per CPU) ...")
    truth, speed = run_on(reference, images, batch_size)
    results = [Measured(reference.runtime, "f32", speed, 1.0, 1.0)]
    for runner in candidates:
        try:
            got, speed = run_on(runner, images, batch_size)
        except (UserError, RuntimeError) as err:  # an int8 file far from fp32 is refused; OpenVINO may fail to compile
            results.append(Measured(runner.runtime, "", 0.0, 0.0, 0.0, str(err)))
            continue
        ref_train, ref_val = truth[: len(train)], truth[len(train) :]
        agree = agreement(ref_train, labels, ref_val, got[len(train) :])
        results.append(Measured(runner.runtime, runner.precision, speed, mean_cosine(got, truth), agree))
    return results


def record_path(reference, candidates: list, photos: CheckPhotos) -> Path:
    """Where the measurement of these runtimes on these photos and this CPU is kept."""
    names = json.dumps([photos.identity, reference.cpu.key, *(runner.fingerprint for runner in candidates)])
    digest = hashlib.sha256(names.encode()).hexdigest()[:12]
    backbone = reference.backbone
    return reference.files.directory / f"auto-{backbone.fingerprint}-{backbone.image_size}px-{digest}.json"


def measured_once(reference, candidates: list, photos: CheckPhotos, batch_size: int, echo) -> list[Measured]:
    """The record of this check, measured now if there is none (one process measures, others wait)."""
    path = record_path(reference, candidates, photos)

    def write(tmp: Path) -> None:
        results = measure(reference, candidates, photos, batch_size, echo)
        rows = [asdict(result) for result in results]
        tmp.write_text(json.dumps({"cpu": reference.cpu.key, "photos": photos.identity, "measured": rows}))

    try:
        reference.files.make(path, "Checking which backbone runtime keeps fp32's features here", write)
        return [Measured(**row) for row in json.loads(path.read_text())["measured"]]
    except (ValueError, KeyError, TypeError):  # a damaged record: measure again
        path.unlink(missing_ok=True)
        return measured_once(reference, candidates, photos, batch_size, echo)


def pick(results: list[Measured], model: ModelConfig) -> tuple[str, str]:
    """(runtime, why): the fastest of results[1:] that passes the check and beats results[0] (fp32),
    else results[0]'s runtime, with why "" (nothing faster keeps fp32's features)."""
    base, rows = results[0], results[1:]
    passing = [row for row in rows if row.passes(model) and row.images_per_s > base.images_per_s]
    if not passing:
        return base.runtime, ""
    best = max(passing, key=lambda row: row.images_per_s)
    return best.runtime, best.verdict(model, base)


def choose(reference, candidates: list, check: Callable[[], CheckPhotos], model: ModelConfig, echo) -> tuple:
    """(the runner auto extracts with, why in words): pick() on the check's record, measured now
    if this CPU has none."""
    if not candidates:
        return reference, "auto: fp32 ONNX"
    results = measured_once(reference, candidates, check(), model.batch_size, echo)
    for row in results[1:]:
        echo(f"  {row.verdict(model, results[0])}")
    chosen, why = pick(results, model)
    where = f"on this {reference.cpu.describe()}"
    if not why:
        return reference, f"auto: fp32 ONNX, no faster runtime keeps its features {where}"
    return next(runner for runner in candidates if runner.runtime == chosen), f"auto: {why} {where}"
