"""The on-disk feature cache: one .npy per FeatureKey, written atomically, claimed while computed.

Pooled features are float32 (n, dim); a cut's activation maps (n, h, w, c) are float16, half the
disk, with no measurable loss (train-final checks the shipped model, which computes them in
float32, against the cached path on every validation photo). Entries load memory-mapped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_exp import locks, writers
from fashion_exp.errors import UserError


@dataclass(frozen=True)
class FeatureKey:
    """Everything that changes an entry's features."""

    weights: str  # Backbone.fingerprint: a hash of the weights file
    decoding: str  # Decoder.key: image size and interpolation
    split: str
    files: str  # Dataset.fingerprint([split]): the ordered files' names, labels and bytes
    policy: str  # augment.policy_key(); 'identity' for no augmentation
    seed: int  # only matters for augmented views; 0 otherwise
    view: int

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(vars(self), sort_keys=True).encode()).hexdigest()[:24]


def stored_dtype(shape: tuple[int, ...]) -> np.dtype:
    """float16 for activation maps (n, h, w, c), float32 for pooled features (n, dim)."""
    return np.dtype(np.float16 if len(shape) > 2 else np.float32)


def bytes_per_image(feature_shape: tuple[int, ...]) -> int:
    """Disk one image's cached features take."""
    return int(np.prod(feature_shape)) * stored_dtype((0, *feature_shape)).itemsize


GB = 1e9


def reserve(path: Path) -> None:
    """Allocate the disk blocks of `path` (a sparse file open_memmap made) before rows are written
    through the map: a full disk is then a one-line UserError here, not SIGBUS on a later write.
    File systems that cannot preallocate are left as they are."""
    size = path.stat().st_size
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(descriptor, 0, size)
    except OSError as err:
        if err.errno in writers.FULL:
            free = shutil.disk_usage(path.parent).free
            raise UserError(
                f"work_dir {path.parent}: the disk is full: a feature cache entry needs {writers.size_text(size)} and "
                f"{writers.size_text(free)} are free; free some space, or set work_dir= on a larger disk"
            ) from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(descriptor)


class FeatureCache:
    """One .npy file per FeatureKey; written to a temporary name, then renamed into place. The
    temporary files of writers that died (kill -9, a full disk before this version) are removed
    when a cache is opened."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        if self.directory.is_dir():
            writers.sweep(self.directory)

    def claim(self, key: FeatureKey, wait: float, on_wait=None):
        """Context manager held while computing one entry: whoever holds it computes the entry, so
        processes that share this cache (commands, search workers, other machines on a shared
        file system) each compute different entries and none computes one twice. wait=0 raises
        locks.Busy at once if another process holds it. The kernel drops the claim of a process
        that dies, so its entry becomes claimable again."""
        return locks.exclusive(
            self.directory / "claims" / f"{self.path(key).stem}.lock",
            f"the feature cache entry {self.path(key).name}",
            wait=wait,
            on_wait=on_wait,
        )

    def path(self, key: FeatureKey) -> Path:
        return self.directory / f"{key.split}-{key.decoding}-{key.digest()}.npy"

    def load(self, key: FeatureKey) -> np.ndarray | None:
        """The entry, memory-mapped read-only (pages are read when used), or None."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable entry (e.g. disk trouble): recompute and overwrite

    @contextmanager
    def writing(self, key: FeatureKey, shape: tuple[int, ...]) -> Iterator[np.ndarray]:
        """A memory-mapped array of `shape` (dtype: stored_dtype) to fill; it becomes the entry
        when the block ends without an exception (rows are written as they come, so memory does
        not grow with the split), and is deleted otherwise."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = writers.temporary(path)
        try:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=stored_dtype(shape), shape=shape)
            reserve(tmp)
            yield array
            array.flush()
            del array
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # only left over if writing failed
