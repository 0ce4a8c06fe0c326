"""Fixed-shape batches: a model traced for one batch shape runs every batch through one graph."""

from __future__ import annotations

import numpy as np


def pad_batch(batch: np.ndarray, size: int) -> np.ndarray:
    """`batch` with zero rows appended up to `size` rows (callers keep only the first len(batch) outputs)."""
    missing = size - len(batch)
    if missing <= 0:
        return batch
    return np.concatenate([batch, np.zeros((missing, *batch.shape[1:]), batch.dtype)])
