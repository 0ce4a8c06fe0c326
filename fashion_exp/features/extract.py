"""Feature extraction: the backbone, on its runtime, run once over each (split, policy, view) job
the cache lacks."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from fashion_exp import locks
from fashion_exp.config import AugmentationPolicy
from fashion_exp.data.augment import is_identity, policy_key, random_transform, view_rng
from fashion_exp.data.dataset import Dataset
from fashion_exp.data.images import Decoder
from fashion_exp.features.cache import FeatureCache, FeatureKey
from fashion_exp.features.runtime import Runner

PREFETCH = 4  # batches decoded ahead of the backbone


@dataclass(frozen=True)
class Job:
    """One cache entry to fill: a split's images under one policy and view."""

    split: str
    policy_key: str  # augment.policy_key(policy): jobs with equal transforms are equal
    view: int
    policy: AugmentationPolicy = field(compare=False, hash=False)


def jobs_for_policy(split: str, policy: AugmentationPolicy) -> list[Job]:
    """The views a split needs under a policy: one for identity, `views` for augmented ones."""
    views = 1 if is_identity(policy) else policy.views
    return [Job(split, policy_key(policy), view, policy) for view in range(views)]


@dataclass
class StageTimes:
    """Where extraction's wall time went: waiting for decoded images, or in the backbone.
    Decoding overlaps the backbone when waiting_for_images stays near zero."""

    waiting_for_images: float = 0.0
    backbone: float = 0.0
    images: int = 0


@dataclass
class Extractor:
    """The backbone, on its runtime, over one dataset's photos (decoded by `decoder`), into one
    cache. Each job's cache key is derived once (key) and shared by whoever asks: the disk check
    (Features.missing_bytes) and the extraction itself (run)."""

    runner: Runner
    dataset: Dataset
    decoder: Decoder
    cache: FeatureCache
    batch_size: int
    seed: int  # augmented views are drawn from it (view_rng)
    stages: StageTimes = field(default_factory=StageTimes)  # where computing time went (benchmarks read it)
    _keys: dict[Job, FeatureKey] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.decoder.size != self.runner.backbone.image_size:
            raise ValueError(f"decoder size {self.decoder.size} != backbone input {self.runner.backbone.image_size}")

    def key(self, job: Job) -> FeatureKey:
        """The cache key of a job's features (everything that changes them)."""
        if job not in self._keys:
            augmented = not is_identity(job.policy)
            self._keys[job] = FeatureKey(
                weights=self.runner.fingerprint,
                decoding=self.decoder.key,
                split=job.split,
                files=self.dataset.fingerprint([job.split]),
                policy=policy_key(job.policy),
                seed=self.seed if augmented else 0,
                view=job.view if augmented else 0,
            )
        return self._keys[job]

    def rows(self, job: Job) -> int:
        return len(self.dataset.splits[job.split])

    def cached(self, job: Job) -> np.ndarray | None:
        """The job's complete cache entry (memory-mapped), or None."""
        array = self.cache.load(self.key(job))
        return array if array is not None and array.shape[0] == self.rows(job) else None

    def run(self, jobs: list[Job]) -> dict[Job, np.ndarray]:
        """Features for every job: from the cache where present, else computed and cached.

        Processes sharing the cache split the work: each missing entry is computed by whoever
        claims it first (FeatureCache.claim); entries others are computing are waited for and
        loaded, or computed here if their claimant died. Returns {job: float32 array (n_images,
        dim)} (activation maps: float16). Shows one progress bar over all images the cache lacked.
        """
        results = {job: self.cached(job) for job in jobs}
        missing = [job for job, array in results.items() if array is None]
        total = sum(self.rows(job) for job in missing)
        with tqdm(
            total=total, desc=f"Extracting features ({self.decoder.key})", unit="img", disable=not missing
        ) as bar:
            claimed_elsewhere = []
            for job in missing:  # first pass: the entries nobody is computing
                try:
                    results[job] = self._fill(job, bar, wait=0)
                except locks.Busy:
                    claimed_elsewhere.append(job)
            for job in claimed_elsewhere:  # then wait for the others' entries (or take over a dead claimant's)
                results[job] = self._fill(job, bar, wait=float("inf"))
        return results

    def _fill(self, job: Job, bar, wait: float) -> np.ndarray:
        """Claim job's entry, then load it (another process computed it meanwhile) or compute it."""
        key = self.key(job)
        with self.cache.claim(key, wait=wait, on_wait=self._say_waiting):
            done = self.cached(job)
            if done is not None:
                bar.update(self.rows(job))
                return done
            with self.cache.writing(key, (self.rows(job), *self.runner.backbone.feature_shape)) as rows:
                self._compute(job, bar, rows)
            return self.cache.load(key)

    def _say_waiting(self, holder) -> None:
        tqdm.write(locks.waiting_line(holder, f"is extracting features into {self.cache.directory}"))

    def _compute(self, job: Job, bar, rows: np.ndarray) -> None:
        """Run the backbone over one job's images into `rows`, advancing the progress bar."""
        done = 0
        batches = _batches(self.dataset, job, self.decoder, self.batch_size, self.seed)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            ready = time.perf_counter()
            self.stages.waiting_for_images += ready - start
            if batch is None:
                break
            rows[done : done + len(batch)] = self.runner.features(batch)
            done += len(batch)
            self.stages.backbone += time.perf_counter() - ready
            self.stages.images += len(batch)
            bar.update(len(batch))


def _batches(dataset: Dataset, job: Job, decoder: Decoder, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    """Decoded (and, for augmented jobs, transformed) uint8 batches, decoded by two background
    threads while the backbone runs on the previous batches."""
    samples = dataset.splits[job.split]

    def decode(start: int) -> np.ndarray:
        images = []
        for sample in samples[start : start + batch_size]:
            image = decoder.load(dataset.root / sample.path)
            if not is_identity(job.policy):
                image = random_transform(image, job.policy, view_rng(seed, job.policy, job.view, sample.path))
            images.append(image)
        return np.stack(images)

    starts = iter(range(0, len(samples), batch_size))
    with ThreadPoolExecutor(max_workers=2) as pool:  # at most PREFETCH batches decoded ahead: bounded memory
        pending = deque(pool.submit(decode, start) for start in itertools.islice(starts, PREFETCH))
        while pending:
            batch = pending.popleft().result()
            following = next(starts, None)
            if following is not None:
                pending.append(pool.submit(decode, following))
            yield batch
