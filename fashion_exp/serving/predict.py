"""predict: top-k categories for image files and folders, with the decoding training used."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashion_exp.data.images import Decoder
from fashion_exp.errors import ImageError, UserError
from fashion_exp.tracking.registry import LoadedModel


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), best first
    error: str | None = None


def expand(paths: list[str]) -> list[Path]:
    """Files as given, and every file under each folder (sorted); a missing path is a UserError."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"{raw}: no such file or folder")
    return files


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[tuple[str, float]]:
    order = np.argsort(-probabilities)[:k]
    return [(class_names[i], float(probabilities[i])) for i in order]


def predict_files(model: LoadedModel, files: list[Path], k: int, max_pixels: int, batch_size: int) -> list[Prediction]:
    """One Prediction per file, in order; unreadable files carry an error instead of classes."""
    decoder = Decoder(model.image_size, model.interpolation, max_pixels)
    results = [Prediction(str(f)) for f in files]
    good: list[tuple[int, np.ndarray]] = []
    for i, f in enumerate(files):
        try:
            good.append((i, decoder.load(f)))
        except ImageError as err:
            results[i].error = err.reason
    for start in range(0, len(good), batch_size):
        chunk = good[start : start + batch_size]
        probabilities = model.predict(np.stack([image for _, image in chunk]), batch_size)
        for (i, _), row in zip(chunk, probabilities, strict=True):
            results[i].top = top_k(row, model.class_names, k)
    return results


def top_as_json(top: list[tuple[str, float]]) -> list[dict]:
    """[(class, probability)] as the JSON both `predict --json` and the HTTP API answer with."""
    return [{"class": c, "probability": round(p, 6)} for c, p in top]


def format_json(predictions: list[Prediction]) -> str:
    rows = [{"path": p.path, "top": top_as_json(p.top), "error": p.error} for p in predictions]
    return json.dumps(rows, indent=2)


def format_table(predictions: list[Prediction]) -> str:
    width = max([len(p.path) for p in predictions] + [4])
    lines = [f"{'file':<{width}}  prediction"]
    for p in predictions:
        shown = f"ERROR: {p.error}" if p.error else "  ".join(f"{c} {prob:.3f}" for c, prob in p.top)
        lines.append(f"{p.path:<{width}}  {shown}")
    return "\n".join(lines)
