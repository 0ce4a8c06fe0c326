"""The dataset: discovery of split/class folders, the validation scan and report, and image decoding.

This is the only module that opens image files.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from fashion_exp.errors import DataError, ImageError

TRAIN, VALIDATION, TEST = "train", "validation", "test"
FETCH_HINT = "run `python -m fashion_exp fetch-data`, or point FASHION_DATA (or data.root=) at the folder"


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the dataset root, with '/' separators
    label: int


@dataclass
class Dataset:
    """The usable images of a dataset after the scan, and what was skipped and why."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
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

    def fingerprint(self) -> str:
        """Changes when any used file, its size, mtime or label changes."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.classes).encode())
        for split in sorted(self.splits):
            for sample in self.splits[split]:
                stat = (self.root / sample.path).stat()
                digest.update(f"{split}|{sample.path}|{sample.label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]


# ---- image decoding -------------------------------------------------------------------------


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any mode: transparent pixels become white (product photos on transparent cut-outs)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def load_image(path: Path | str, size: int, max_pixels: int = 89_478_485, interpolation: str = "nearest") -> np.ndarray:
    """Decode one image file the way training, prediction and serving all do.

    EXIF orientation applied, converted to RGB (alpha over white), resized to size x size with
    `interpolation` (nearest by default, as keras' load_img and the course). Returns a uint8 array
    (size, size, 3); raises ImageError with a one-line reason.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found", "missing") from None
    except OSError as err:
        raise ImageError(f"{path}: cannot read file ({err.strerror})", "missing") from None
    return decode_image(data, size, max_pixels, interpolation, name=str(path))


def decode_image(
    data: bytes, size: int, max_pixels: int = 89_478_485, interpolation: str = "nearest", name: str = "image"
) -> np.ndarray:
    """load_image for bytes already in memory (an upload); `name` prefixes error messages."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            with Image.open(io.BytesIO(data)) as img:
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img).resize((size, size), INTERPOLATIONS[interpolation])
                return np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read", "not_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: more pixels than the decompression-bomb limit of {max_pixels} (data.max_image_pixels)",
            "too_large",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"{name}: corrupt or truncated image ({err})") from None


@dataclass(frozen=True)
class Decoder:
    """The decoding settings every consumer of images shares (training, prediction, serving)."""

    size: int
    interpolation: str = "nearest"
    max_pixels: int = 89_478_485

    def load(self, path: Path | str) -> np.ndarray:
        return load_image(path, self.size, self.max_pixels, self.interpolation)

    def decode(self, data: bytes, name: str = "upload") -> np.ndarray:
        return decode_image(data, self.size, self.max_pixels, self.interpolation, name=name)

    @property
    def key(self) -> str:
        """What changes the pixels a model sees (max_pixels only decides what is refused)."""
        return f"{self.size}px-{self.interpolation}"


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


def _scan_key(root: Path, samples: dict[str, list[Sample]], max_pixels: int) -> str:
    digest = hashlib.sha256(f"{root.resolve()}|{max_pixels}".encode())
    for split in sorted(samples):
        for sample in samples[split]:
            stat = (root / sample.path).stat()
            digest.update(f"{sample.path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def scan_dataset(
    root: Path | str,
    splits: list[str],
    limit_per_class: int | None = None,
    max_pixels: int = 89_478_485,
    cache_dir: Path | str | None = None,
) -> Dataset:
    """Decode every candidate image once; skip and list unreadable ones; fail on empty classes.

    The verdicts are cached in cache_dir keyed by every file's path, size and mtime, so an
    unchanged dataset is not decoded again.
    """
    root = Path(root)
    classes, candidates = find_samples(root, splits, limit_per_class)
    cache_file = None
    verdicts: dict[str, str | None] = {}
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"scan-{_scan_key(root, candidates, max_pixels)}.json"
        if cache_file.is_file():
            verdicts = json.loads(cache_file.read_text())
    todo = [s for split in splits for s in candidates[split] if s.path not in verdicts]
    for sample in tqdm(todo, desc="Checking images", unit="img", disable=not todo, leave=False):
        try:
            load_image(root / sample.path, 64, max_pixels)
            verdicts[sample.path] = None
        except ImageError as err:
            verdicts[sample.path] = str(err).split(": ", 1)[-1]
    if cache_file is not None and todo:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(verdicts))
        os.replace(tmp, cache_file)
    good = {split: [s for s in candidates[split] if verdicts[s.path] is None] for split in splits}
    skipped = [(s.path, verdicts[s.path]) for split in splits for s in candidates[split] if verdicts[s.path]]
    dataset = Dataset(root=root, classes=classes, splits=good, skipped=skipped)
    for split, per_class in dataset.counts().items():
        empty = [name for name, n in per_class.items() if n == 0]
        if empty:
            raise DataError(
                f"{root / split}: no readable images for class {', '.join(empty)} "
                f"({len(skipped)} files skipped in all); every class needs images in every split"
            )
    return dataset


def scan_configured(data, splits: list[str], work_dir: Path | str) -> Dataset:
    """scan_dataset with the settings of a DataConfig, caching verdicts under work_dir/scans."""
    return scan_dataset(
        data.root, splits, data.limit_per_class, data.max_image_pixels, cache_dir=Path(work_dir) / "scans"
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
