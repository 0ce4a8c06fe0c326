"""The dataset: discovery of split/class folders, the dataset check (scan) and its report.

Every file the scan accepts is identified by a hash of its bytes, so a photo replaced in place
(same name, same size, even the same mtime) is a different file to every cache downstream.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from fashion_exp.config import DataConfig
from fashion_exp.data.images import PHOTO_FORMATS, decode_image, read_file
from fashion_exp.errors import DataError, ImageError

TRAIN, VALIDATION, TEST = "train", "validation", "test"
FETCH_HINT = "run `python -m fashion_exp fetch-data`, or point FASHION_DATA (or data.root=) at the folder"


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the dataset root, with '/' separators
    label: int


@dataclass
class Dataset:
    """The usable images of a dataset after the scan, what was skipped and why, and each file's
    content hash."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
    digests: dict[str, str]  # relative path -> hash of the file's bytes at scan time
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    def paths(self, split: str) -> list[Path]:
        return [self.root / s.path for s in self.splits[split]]

    def labels(self, split: str) -> np.ndarray:
        return np.array([s.label for s in self.splits[split]], dtype=np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split: {split: {class: n}}."""
        out = {}
        for split, samples in self.splits.items():
            per_class = dict.fromkeys(self.classes, 0)
            for sample in samples:
                per_class[self.classes[sample.label]] += 1
            out[split] = per_class
        return out

    def fingerprint(self, splits: list[str] | None = None) -> str:
        """Changes when any used file's name, label or bytes change: the one identity of the data,
        used by the search id (all splits) and the feature cache key (one split)."""
        digest = hashlib.sha256(json.dumps(self.classes).encode())
        for split in sorted(splits or self.splits):
            for sample in self.splits[split]:
                digest.update(f"{split}|{sample.path}|{sample.label}|{self.digests[sample.path]}\n".encode())
        return digest.hexdigest()[:16]

    def describe(self, split: str) -> dict[str, Any]:
        """A split as a dataset record (MLflow logs it as a run input): its digest changes when a
        photo of the split changes."""
        return {
            "name": f"{self.root.name}/{split}",
            "source": str((self.root / split).resolve()),  # absolute: a run is read from anywhere
            "digest": self.fingerprint([split]),
            "split": split,
            "images": len(self.splits[split]),
            "classes": list(self.classes),
            "per_class": self.counts()[split],
        }


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- discovery and the scan -----------------------------------------------------------------


def find_samples(root: Path, splits: list[str], limit_per_class: int | None) -> tuple[list[str], dict]:
    """List candidate files per split; check class folders agree. Returns (classes, {split: [Sample]})."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset not found at {root.resolve()}: {FETCH_HINT}")
    found: dict[str, list[str]] = {}
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"dataset at {root} has no '{split}/' folder: {FETCH_HINT}")
        found[split] = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not found[split]:
            raise DataError(f"{split_dir}: no class folders (expected one folder per class)")
    classes = found[splits[0]]
    for split in splits[1:]:
        if found[split] != classes:
            missing = sorted(set(classes) - set(found[split]))
            extra = sorted(set(found[split]) - set(classes))
            raise DataError(
                f"class folders differ between {splits[0]}/ and {split}/: "
                f"missing in {split}/: {missing or 'none'}, only in {split}/: {extra or 'none'}"
            )
    samples: dict[str, list[Sample]] = {}
    for split in splits:
        samples[split] = []
        for label, name in enumerate(classes):
            files = sorted(
                f.name for f in (root / split / name).iterdir() if f.is_file() and not f.name.startswith(".")
            )
            if limit_per_class is not None:
                files = files[:limit_per_class]
            samples[split] += [Sample(f"{split}/{name}/{f}", label) for f in files]
    return classes, samples


class VerdictCache:
    """Whether a file decodes, keyed by the hash of its bytes: a JSON file of digest -> reason
    (null = readable), written to a temporary name and renamed into place."""

    def __init__(self, directory: Path | str | None, max_pixels: int):
        name = f"verdicts-{max_pixels}px-{'-'.join(PHOTO_FORMATS).lower()}.json"  # (verdicts of other formats: new)
        self.path = Path(directory) / name if directory is not None else None
        self.max_pixels = max_pixels
        self.verdicts: dict[str, str | None] = {}
        self.changed = False  # a verdict was added since the file was read
        if self.path is not None and self.path.is_file():
            try:
                self.verdicts = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.verdicts = {}  # an unreadable cache is only lost time: decode again

    def reason(self, data: bytes, digest: str, scan_size: int) -> str | None:
        """Why the file with these bytes (and this digest) is unusable, None if it decodes; bytes seen
        before are not decoded again."""
        if digest not in self.verdicts:
            try:
                decode_image(data, scan_size, self.max_pixels, "nearest")
                self.verdicts[digest] = None
            except ImageError as err:
                self.verdicts[digest] = err.reason
            self.changed = True
        return self.verdicts[digest]

    def save(self) -> None:
        """Write the verdicts if any was added (to a temporary name, renamed into place)."""
        if self.path is None or not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.verdicts))
        os.replace(tmp, self.path)


def scan_dataset(
    root: Path | str,
    splits: list[str],
    limit_per_class: int | None,
    max_pixels: int,
    scan_size: int,
    cache_dir: Path | str | None = None,
) -> Dataset:
    """Read every candidate file once: hash its bytes, and decode it (at scan_size) unless a file
    with the same bytes was decoded before. Unreadable files are skipped and listed; a class with
    no readable image in a split is a DataError. Verdicts are cached in cache_dir by content hash.
    """
    root = Path(root)
    classes, candidates = find_samples(root, splits, limit_per_class)
    every = [s for split in splits for s in candidates[split]]
    digests, reasons = _check_files(root, every, VerdictCache(cache_dir, max_pixels), scan_size)
    good = {split: [s for s in candidates[split] if s.path in digests] for split in splits}
    skipped = [(s.path, reasons[s.path]) for s in every if s.path in reasons]
    dataset = Dataset(root=root, classes=classes, splits=good, digests=digests, skipped=skipped)
    _require_every_class(dataset)
    return dataset


def _check_files(
    root: Path, samples: list[Sample], cache: VerdictCache, scan_size: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(relative path -> content hash of each usable file, relative path -> why each other file is
    skipped), with a progress bar; new verdicts are saved to the cache."""
    digests: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for sample in tqdm(samples, desc="Checking images", unit="img", leave=False):
        try:
            data = read_file(root / sample.path)
        except ImageError as err:
            reasons[sample.path] = err.reason
            continue
        digest = content_digest(data)
        reason = cache.reason(data, digest, scan_size)
        if reason is None:
            digests[sample.path] = digest
        else:
            reasons[sample.path] = reason
    cache.save()
    return digests, reasons


def _require_every_class(dataset: Dataset) -> None:
    """DataError naming the split and classes left without a readable image."""
    for split, per_class in dataset.counts().items():
        empty = [name for name, n in per_class.items() if n == 0]
        if empty:
            raise DataError(
                f"{dataset.root / split}: no readable images for class {', '.join(empty)} "
                f"({len(dataset.skipped)} files skipped in all); every class needs images in every split"
            )


def scan_configured(data: DataConfig, splits: list[str], work_dir: Path | str) -> Dataset:
    """scan_dataset with the settings of a DataConfig, caching verdicts under work_dir/scans."""
    return scan_dataset(
        data.root, splits, data.limit_per_class, data.max_image_pixels, data.scan_size, Path(work_dir) / "scans"
    )


def report(dataset: Dataset) -> str:
    """A plain-text table: images per class per split, then the skipped files with reasons."""
    counts = dataset.counts()
    splits = list(counts)
    width = max(len(c) for c in dataset.classes + ["total"])
    lines = [f"Dataset {dataset.root}  ({len(dataset.classes)} classes)"]
    lines.append(" " * width + "".join(f"{s:>12}" for s in splits))
    for name in dataset.classes:
        lines.append(f"{name:<{width}}" + "".join(f"{counts[s][name]:>12}" for s in splits))
    lines.append(f"{'total':<{width}}" + "".join(f"{sum(counts[s].values()):>12}" for s in splits))
    if dataset.skipped:
        lines.append(f"Skipped {len(dataset.skipped)} unreadable files:")
        lines += [f"  {path}: {reason}" for path, reason in dataset.skipped]
    return "\n".join(lines)
