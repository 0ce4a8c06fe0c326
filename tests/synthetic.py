"""Tiny synthetic datasets: a few noisy single-colour images per class."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_DATA = SHARED / "data" / "clothing-dataset-small"
REAL_WEIGHTS = SHARED / "weights" / "xception_notop.weights.h5"

CLASSES = ("hat", "pants", "shoes")
COLORS = {"hat": (200, 40, 40), "pants": (40, 200, 40), "shoes": (40, 40, 200)}


def write_image(path: Path, color, size=(40, 48), seed=0) -> Path:
    """A noisy image of one dominant colour: easy to learn, cheap to decode."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_dataset(root: Path, per_split=None) -> Path:
    per_split = per_split or {"train": 8, "validation": 4, "test": 4}
    for split, n in per_split.items():
        for name in CLASSES:
            for i in range(n):
                write_image(
                    root / split / name / f"{name}_{i}.jpg", COLORS[name], seed=zlib.crc32(f"{split}{name}{i}".encode())
                )
    return root


def data_config(root: Path | str = "data", *overrides: str):
    """The data section of the real config (conf/) pointed at `root`: tests never restate defaults."""
    from fashion_exp.config import load_config

    return load_config([f"data.root={root}", *overrides]).data


def scan(root: Path, splits: list[str], cache_dir: Path | None = None, limit_per_class: int | None = None):
    """scan_dataset with conf/'s data settings (decompression-bomb limit, scan size)."""
    from fashion_exp.data.dataset import scan_dataset

    data = data_config(root)
    return scan_dataset(root, splits, limit_per_class, data.max_image_pixels, data.scan_size, cache_dir)
