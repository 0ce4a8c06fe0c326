"""model.runtime=auto on a CPU, for the search: the fastest runtime whose features pass a check on
this machine, against the fastest fp32 runtime (fastest_fp32: ONNX Runtime or OpenVINO f32).

The check runs every candidate and fp32 on the same photos: model.auto_check_photos training
photos spread over the split and every validation photo. It measures each one's speed (images a
second, after one warm-up batch) and the mean cosine of its features to fp32's, then fits a
ridge-regression head on each runtime's own training features, as the search's heads train on
them, and compares the two heads on the validation photos, paired (fashion_exp/gate.py): the
candidate passes when the accuracy it may lose stays under model.auto_accuracy_margin and the
share of photos that change class under model.auto_max_changed, both at model.auto_confidence,
with cosine >= model.auto_min_cosine. What was measured (per-photo predictions included) is kept
in work_dir/backbones, one record per backbone, image size, CPU flags and photo set, so each
machine kind measures once; the rule is applied to the record at every start.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fashion_exp.config import ModelConfig
from fashion_exp.data.dataset import TRAIN, VALIDATION, Dataset
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.features.onnx_files import mean_cosine, spread
from fashion_exp.gate import GateResult, GateRule, judge
from fashion_exp.screen import say

RIDGE = 0.1  # the check head's ridge penalty, relative to the mean squared norm of a standardized row


@dataclass(frozen=True)
class CheckPhotos:
    """The photos auto's check runs on: `identity` names them without decoding anything; `load`
    decodes them."""

    identity: str
    load: Callable[[], Decoded]
    sample: Callable[[int], np.ndarray]  # the first n training photos of `load`'s spread, for a speed race


@dataclass(frozen=True)
class Decoded:
    """The check photos decoded: training images the check heads fit on, every validation image."""

    train: np.ndarray
    labels: np.ndarray  # the training images' classes
    val: np.ndarray
    val_labels: np.ndarray


def check_photos(dataset: Dataset, decoder: Decoder, count: int) -> CheckPhotos:
    """`count` training photos spread over the class-sorted split, and every validation photo
    (the paired test needs as many as there are: gate.GateRule.photos_needed)."""
    train, val = dataset.paths(TRAIN), dataset.paths(VALIDATION)
    train_ids = spread(len(train), count)

    def load():
        labels = np.asarray(dataset.labels(TRAIN))[train_ids]
        train_images = np.stack([decoder.load(train[i]) for i in train_ids])
        val_images = np.stack([decoder.load(path) for path in val])
        return Decoded(train_images, labels, val_images, np.asarray(dataset.labels(VALIDATION)))

    def sample(n: int) -> np.ndarray:
        return np.stack([decoder.load(train[i]) for i in spread(len(train), n)])

    return CheckPhotos(f"{dataset.fingerprint([TRAIN, VALIDATION])}-{decoder.key}-{count}-allval", load, sample)


@dataclass(frozen=True)
class Measured:
    """One runtime on the check photos: its speed, its features' cosine to fp32's, and the classes
    a ridge head fitted on its own training features predicts for the validation photos;
    `error` says why it could not run (then it never passes)."""

    runtime: str
    precision: str  # what it computed in (OpenVINO runs f32 where asked for bf16 on a CPU without BF16)
    images_per_s: float
    cosine: float
    predicted: list[int] = field(default_factory=list)  # one class per validation photo
    error: str = ""

    def judged(self, labels, reference: Measured, model: ModelConfig) -> GateResult:
        return judge(labels, reference.predicted, self.predicted, GateRule.of(model))

    def passes(self, labels, reference: Measured, model: ModelConfig) -> bool:
        if self.error or len(self.predicted) != len(labels):
            return False
        return self.cosine >= model.auto_min_cosine and self.judged(labels, reference, model).holds

    def verdict(self, labels, reference: Measured, model: ModelConfig) -> str:
        if self.error:
            return f"{self.runtime} could not run ({self.error})"
        gate = self.judged(labels, reference, model)
        numbers = f"{self.speedup(reference):.2f}x fp32, cosine {self.cosine:.4f}, {gate.describe(GateRule.of(model))}"
        if not self.passes(labels, reference, model):
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


def head_predictions(train_features, labels, val_features) -> list[int]:
    """The classes a ridge head fitted on these training features predicts for these validation features."""
    head = ridge_head(_pooled(train_features), labels)
    return [int(c) for c in head(_pooled(val_features)).argmax(1)]


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


def measure(reference, candidates: list, photos: CheckPhotos, batch_size: int) -> tuple[list, list[Measured]]:
    """(validation labels, fp32 (`reference`) then each candidate measured on the check photos)."""
    decoded = photos.load()
    train, labels, val, val_labels = decoded.train, decoded.labels, decoded.val, decoded.val_labels
    images = np.concatenate([train, val])
    say(f"Measuring {len(candidates) + 1} backbone runtimes on {len(train)} + {len(val)} photos (once per CPU) ...")
    truth, speed = run_on(reference, images, batch_size)
    own = head_predictions(truth[: len(train)], labels, truth[len(train) :])
    results = [Measured(reference.runtime, "f32", speed, 1.0, own)]
    for runner in candidates:
        try:
            got, speed = run_on(runner, images, batch_size)
        except (UserError, RuntimeError) as err:  # an int8 file far from fp32 is refused; OpenVINO may fail to compile
            results.append(Measured(runner.runtime, "", 0.0, 0.0, [], str(err)))
            continue
        predicted = head_predictions(got[: len(train)], labels, got[len(train) :])
        results.append(Measured(runner.runtime, runner.precision, speed, mean_cosine(got, truth), predicted))
    return [int(c) for c in val_labels], results


def record_path(reference, candidates: list, photos: CheckPhotos) -> Path:
    """Where the measurement of these runtimes on these photos and this CPU is kept."""
    runners = (reference, *candidates)
    names = json.dumps([photos.identity, reference.cpu.key, *(runner.fingerprint for runner in runners)])
    digest = hashlib.sha256(names.encode()).hexdigest()[:12]
    backbone = reference.backbone
    return reference.files.directory / f"auto-{backbone.fingerprint}-{backbone.image_size}px-{digest}.json"


def measured_once(reference, candidates: list, photos: CheckPhotos, batch_size: int) -> Record:
    """The record of this check, measured now if there is none (one process measures, others wait)."""
    path = record_path(reference, candidates, photos)

    def write(tmp: Path) -> None:
        labels, results = measure(reference, candidates, photos, batch_size)
        rows = [asdict(result) for result in results]
        record = {"cpu": reference.cpu.key, "photos": photos.identity, "labels": labels, "measured": rows}
        tmp.write_text(json.dumps(record))

    try:
        reference.files.make(path, "Checking which backbone runtime keeps fp32's accuracy here", write)
        saved = json.loads(path.read_text())
        return Record([int(c) for c in saved["labels"]], [Measured(**row) for row in saved["measured"]])
    except (ValueError, KeyError, TypeError):  # a damaged record: measure again
        path.unlink(missing_ok=True)
        return measured_once(reference, candidates, photos, batch_size)


@dataclass(frozen=True)
class Record:
    """A check as kept: the validation photos' labels, fp32 first, then each candidate."""

    labels: list[int]
    measured: list[Measured]


def pick(record: Record, model: ModelConfig) -> tuple[str, str]:
    """(runtime, why): the fastest candidate that passes the check and beats fp32 (measured[0]),
    else fp32's runtime, with why "" (nothing faster keeps fp32's accuracy)."""
    base, rows = record.measured[0], record.measured[1:]
    passing = [r for r in rows if r.passes(record.labels, base, model) and r.images_per_s > base.images_per_s]
    if not passing:
        return base.runtime, ""
    best = max(passing, key=lambda row: row.images_per_s)
    return best.runtime, best.verdict(record.labels, base, model)


def choose(reference, candidates: list, check: Callable[[], CheckPhotos], model: ModelConfig) -> tuple:
    """(the runner auto extracts with, why in words): pick() on the check's record, measured now
    if this CPU has none."""
    if not candidates:
        return reference, f"auto: fp32 {reference.runtime}"
    record = measured_once(reference, candidates, check(), model.batch_size)
    for row in record.measured[1:]:
        say(f"  {row.verdict(record.labels, record.measured[0], model)}")
    chosen, why = pick(record, model)
    where = f"on this {reference.cpu.describe()}"
    if not why:
        return reference, f"auto: fp32 {reference.runtime}, no faster runtime keeps its accuracy {where}"
    return next(runner for runner in candidates if runner.runtime == chosen), f"auto: {why} {where}"


def batch_rate(runner, images: np.ndarray, batch_size: int) -> float:
    """Images a second of the median batch after an untimed warm-up batch: a race of a few batches
    must not be decided by another process's burst on the same cores."""
    runner.features(images[:batch_size])
    seconds = []
    for start in range(batch_size, len(images), batch_size):
        began = time.perf_counter()
        runner.features(images[start : start + batch_size])
        seconds.append((time.perf_counter() - began) / len(images[start : start + batch_size]))
    return 1 / max(float(np.median(seconds)), 1e-9)


def fastest_fp32(runners: list, check: Callable[[], CheckPhotos], model: ModelConfig) -> tuple:
    """(the fastest of `runners`, why in words): runtimes that compute fp32's features (ONNX
    Runtime, OpenVINO f32), timed on a few training photos at this size on this CPU, the record
    kept in work_dir/backbones (measured once per backbone, size and CPU)."""
    first = runners[0]
    backbone = first.backbone
    name = f"fp32-{backbone.fingerprint}-{backbone.image_size}px-{first.cpu.key}-{'+'.join(r.runtime for r in runners)}"
    path = first.files.directory / f"{name}.json"

    def write(tmp: Path) -> None:
        images = check().sample(model.batch_size * (model.race_batches + 1))
        speeds = {}
        for runner in runners:
            try:
                speeds[runner.runtime] = batch_rate(runner, images, model.batch_size)
            except RuntimeError as err:  # (OpenVINO may fail to compile a graph: the others still race)
                say(f"  {runner.runtime} could not run ({err})")
        tmp.write_text(json.dumps(speeds))

    try:
        first.files.make(path, f"Timing the fp32 runtimes at {backbone.image_size}px", write)
        speeds = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError):  # a damaged record: time again
        path.unlink(missing_ok=True)
        return fastest_fp32(runners, check, model)
    timed = [runner for runner in runners if runner.runtime in speeds] or runners[:1]
    best = max(timed, key=lambda runner: speeds.get(runner.runtime, 0.0))
    table = ", ".join(f"{runtime} {speed:.1f}" for runtime, speed in sorted(speeds.items(), key=lambda kv: -kv[1]))
    return best, f"the fastest fp32 here (images/s: {table})"
