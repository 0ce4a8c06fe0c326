"""A search's features for every cut its trials may train on (search.blocks): the first now, the
others when the first trial that needs them starts; and the disk they take, checked before any
work.

blocks = 0 trains heads on pooled features (a few KB a photo); blocks = b > 0 trains the top b
blocks on the activation maps below them (51,200 bytes a photo at 150px, 204,800 at 299px for
Xception's block14 cut), one cache entry per split, policy and view, like pooled features.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from fashion_exp.config import AugmentationPolicy, Config
from fashion_exp.errors import UserError
from fashion_exp.features.cache import FeatureCache, bytes_per_image
from fashion_exp.features.extract import key_for
from fashion_exp.features.prepare import FeatureSources, LazyMapping, PreparedFeatures, jobs_for, open_sources
from fashion_exp.hyperparameters import candidates

GB = 1e9


def open_cuts(config: Config, sources: FeatureSources, blocks: list[int], echo=print) -> dict[int, FeatureSources]:
    """The sources for each number of trained blocks: `sources` (opened for one of them,
    first_cut) and a backbone cut below each other count, on the same scanned dataset."""
    opened = {sources.backbone.blocks: sources}
    for count in blocks:
        if count not in opened:
            scanned = (sources.dataset, sources.report)
            opened[count] = open_sources(config, sources.backbone.image_size, echo, blocks=count, dataset=scanned)
    return {count: opened[count] for count in blocks}


def missing_bytes(
    config: Config, sources: FeatureSources, policies: dict[str, AugmentationPolicy], clean_train: bool = False
) -> int:
    """Disk the cache entries of `sources` (prepare.jobs_for: validation, every policy's training
    views, the clean training photos when clean_train) still need."""
    cache = FeatureCache(Path(config.work_dir) / "features")
    size = bytes_per_image(sources.backbone.feature_shape)
    total = 0
    for job in jobs_for(policies, clean_train):
        key = key_for(sources.runner, sources.decoder, sources.dataset, job, config.seed)
        if not cache.path(key).is_file():
            total += size * len(sources.dataset.splits[job.split])
    return total


def check_disk(
    config: Config,
    cuts: dict[int, FeatureSources],
    policies: dict[str, AugmentationPolicy],
    echo=print,
    clean_train: bool = False,
    what: str = "the search's",
    remedy: str = "drop search.blocks values",
):
    """Say what the cached features of every cut take; raise UserError (one line) before any
    work when the disk under work_dir cannot hold what is missing (`what`: whose features;
    `remedy`: the last of the ways out the message offers)."""
    needed = {count: missing_bytes(config, sources, policies, clean_train) for count, sources in cuts.items()}
    for count, sources in cuts.items():
        if count:
            shape = "x".join(map(str, sources.backbone.feature_shape))
            size = bytes_per_image(sources.backbone.feature_shape)
            echo(
                f"blocks={count}: activations {shape} cached in float16, {size:,} bytes a photo, "
                f"{needed[count] / GB:.2f} GB still to extract"
            )
    directory = Path(config.work_dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    total = sum(needed.values())
    if total > free:
        raise UserError(
            f"work_dir {directory}: {what} cached features need {total / GB:.2f} GB more and the disk has "
            f"{free / GB:.2f} GB free; free some space, set work_dir= on a larger disk, or {remedy}"
        )


def first_cut(config: Config) -> int:
    """The blocks value a search opens its sources for first (its search id names that cut's
    features): the smallest its space holds, 0 for every search without fine-tuning."""
    return min(candidates(config.search, "blocks"))


class FeatureSets(LazyMapping):
    """blocks -> the PreparedFeatures a trial training that many top blocks uses. The first count
    is prepared at once; the others the first time a trial asks (a count no trial picks costs
    nothing)."""

    def __init__(self, cuts: dict[int, FeatureSources], prepare: Callable[[FeatureSources], PreparedFeatures]):
        def load(blocks: int) -> PreparedFeatures:
            prepared = prepare(cuts[blocks])
            prepared.drop_backbone()  # trials train on cached features only (the top blocks stay)
            return prepared

        super().__init__(list(cuts), load)
        self.first = self[min(cuts)]
        self.seconds = 0.0  # the first count's time is the search's extraction lap; this counts the trials'

    @property
    def extraction_seconds(self) -> float:
        """Time the trials spent extracting or loading features (views, later cuts)."""
        loaded = self._loaded.values()
        return self.seconds + sum(s.train_views.seconds for s in loaded if isinstance(s.train_views, LazyMapping))
