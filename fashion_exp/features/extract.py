"""Feature extraction: the backbone, on its runtime, run once over each (split, policy, view) the
cache lacks."""

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


def key_for(runner: Runner, decoder: Decoder, dataset: Dataset, job: Job, seed: int) -> FeatureKey:
    augmented = not is_identity(job.policy)
    return FeatureKey(
        weights=runner.fingerprint,
        decoding=decoder.key,
        split=job.split,
        files=dataset.fingerprint([job.split]),
        policy=policy_key(job.policy),
        seed=seed if augmented else 0,
        view=job.view if augmented else 0,
    )


def extract_features(
    runner: Runner,
    dataset: Dataset,
    cache: FeatureCache,
    jobs: list[Job],
    decoder: Decoder,
    batch_size: int,
    seed: int,
    stages: StageTimes | None = None,
) -> dict[Job, np.ndarray]:
    """Features for every job: from the cache where present, else computed and cached.

    Processes sharing the cache split the work: each missing entry is computed by whoever claims
    it first (FeatureCache.claim); entries others are computing are waited for and loaded, or
    computed here if their claimant died. Returns {job: float32 array (n_images, dim)}. Shows
    one progress bar over all images the cache lacked. `stages`, when given, adds up where the
    computing time went (benchmarks/bench_speed.py reads it).
    """
    if decoder.size != runner.backbone.image_size:
        raise ValueError(f"decoder size {decoder.size} != backbone input {runner.backbone.image_size}")
    stages = stages if stages is not None else StageTimes()
    results: dict[Job, np.ndarray] = {}
    missing = _load_cached(runner, dataset, cache, jobs, decoder, seed, results)
    total = sum(len(dataset.splits[job.split]) for job in missing)
    with tqdm(total=total, desc=f"Extracting features ({decoder.key})", unit="img", disable=not missing) as bar:
        claimed_elsewhere = []
        for job in missing:  # first pass: the entries nobody is computing
            try:
                _fill(runner, dataset, cache, job, decoder, batch_size, seed, results, bar, stages, wait=0)
            except locks.Busy:
                claimed_elsewhere.append(job)
        for job in claimed_elsewhere:  # then wait for the others' entries (or take over a dead claimant's)
            _fill(runner, dataset, cache, job, decoder, batch_size, seed, results, bar, stages, wait=float("inf"))
    return results


def _fill(runner, dataset, cache, job: Job, decoder, batch_size, seed, results: dict, bar, stages, wait: float) -> None:
    """Claim job's entry, then load it (another process computed it meanwhile) or compute it."""
    key = key_for(runner, decoder, dataset, job, seed)
    with cache.claim(key, wait=wait, on_wait=_say_waiting(cache)):
        if _load_cached(runner, dataset, cache, [job], decoder, seed, results):
            with cache.writing(key, (len(dataset.splits[job.split]), *runner.backbone.feature_shape)) as rows:
                _compute(runner, dataset, job, decoder, batch_size, seed, bar, rows, stages)
            results[job] = cache.load(key)
        else:
            bar.update(len(dataset.splits[job.split]))


def _say_waiting(cache: FeatureCache):
    def say(holder) -> None:
        tqdm.write(locks.waiting_line(holder, f"is extracting features into {cache.directory}"))

    return say


def _load_cached(runner, dataset, cache, jobs, decoder, seed, results: dict) -> list[Job]:
    """Put every cached job's features into results; returns the jobs the cache lacks."""
    missing = []
    for job in jobs:
        cached = cache.load(key_for(runner, decoder, dataset, job, seed))
        if cached is not None and cached.shape[0] == len(dataset.splits[job.split]):
            results[job] = cached
        else:
            missing.append(job)
    return missing


@dataclass
class StageTimes:
    """Where extraction's wall time went: waiting for decoded images, or in the backbone.
    Decoding overlaps the backbone when waiting_for_images stays near zero."""

    waiting_for_images: float = 0.0
    backbone: float = 0.0
    images: int = 0


def _compute(runner, dataset, job: Job, decoder, batch_size, seed, bar, rows: np.ndarray, stages: StageTimes) -> None:
    """Run the backbone over one job's images into `rows`, advancing the progress bar."""
    done = 0
    batches = _batches(dataset, job, decoder, batch_size, seed)
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        ready = time.perf_counter()
        stages.waiting_for_images += ready - start
        if batch is None:
            break
        rows[done : done + len(batch)] = runner.features(batch)
        done += len(batch)
        stages.backbone += time.perf_counter() - ready
        stages.images += len(batch)
        bar.update(len(batch))
