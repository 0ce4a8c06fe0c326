"""The `tune` job: cached features -> keras-tuner search -> MLflow parent and child runs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fashion_exp import locks
from fashion_exp.config import PLACEMENT_KEYS, Config, flatten, to_yaml
from fashion_exp.data.dataset import TRAIN, VALIDATION, Dataset
from fashion_exp.data.images import Decoder
from fashion_exp.features.features import Features, Scan, check_disk, choose_runtime, jobs_for, scan
from fashion_exp.hyperparameters import NAMES, HeadParams, candidates, describe
from fashion_exp.mounts import local_locks_warning
from fashion_exp.screen import say
from fashion_exp.search import keras_tuner_fixes
from fashion_exp.search.chief import run_chief_trials
from fashion_exp.search.hypermodel import HeadHyperModel
from fashion_exp.search.observers import TrialProgress, TrialRecorder
from fashion_exp.search.state_files import check_readable, remove_stale_partials
from fashion_exp.search.tuner import best_trial, finished_trials, make_tuner
from fashion_exp.stopwatch import Stopwatch
from fashion_exp.tracking.search_runs import SearchSummary, SearchTracker
from fashion_exp.tracking.tags import HOST, PRESET, STAGE, WORKER


@dataclass(frozen=True)
class SearchWork:
    """What this process computed for a search, for the plan's measured rates (search/costs.py)."""

    runtime: str  # the backbone's
    extracted_images: int  # photos passed through the backbone (not loaded from the cache)
    extraction_seconds: float  # ... and the time they took, decoding included
    trials_run: int  # trials this process ran to their end
    epochs_run: int  # ... and the epochs they trained (early stopping counted)
    trial_seconds: float  # ... and the time they took, less feature extraction


@dataclass
class SearchResult:
    parent_run_id: str
    search_id: str
    objective: str
    best_trial_id: str | None
    best_score: float | None
    best_hyperparameters: dict
    trials: int
    tracking_uri: str
    timings: dict[str, float]
    experiment_id: str | None = None
    work: SearchWork | None = None  # what this process computed (None on workers: they measure there)
    tried: list[tuple[dict, float]] = field(default_factory=list)  # every completed trial: (its values, its score)


def search_policies(config: Config) -> dict:
    """The augmentation policies the search space can pick, by name."""
    return {name: config.augmentation[name] for name in config.search["augmentation"].values}


def first_cut(config: Config) -> int:
    """The blocks value whose features name a search (search id): the smallest its space holds, 0
    for every search without fine-tuning."""
    return min(candidates(config.search, "blocks"))


def open_cut(config: Config, checked: Scan, blocks: int) -> Features:
    """The features of the search's image size, cut below the top `blocks` blocks."""
    decoder = Decoder.for_data(config.data, config.data.image_size)
    runner = choose_runtime(checked, config.model, decoder, config.work_dir, seed=config.seed, blocks=blocks)
    return Features.on(checked, runner, decoder, config.work_dir, config.model, config.seed)


def open_first_cut(config: Config, clock: Stopwatch | None = None) -> Features:
    """Scan the dataset and open the first cut's features (what the search id is made from)."""
    clock = clock or Stopwatch()
    checked = scan(config.data, config.work_dir)
    clock.lap("scan_seconds")
    first = open_cut(config, checked, first_cut(config))
    clock.lap("backbone_seconds")
    return first


def search_features(config: Config, first: Features) -> dict[int, Features]:
    """blocks -> the features a trial training that many top blocks uses, for every search.blocks
    value, after a check that the disk holds them all. The first cut's validation features (and,
    with tuner.folds, the training photos un-augmented) are extracted now; each policy's views,
    and the other cuts' features, when the first trial that needs them starts."""
    counts = candidates(config.search, "blocks")
    cuts = {n: first if n == first.blocks else open_cut(config, first.scanned, n) for n in counts}
    clean_train = config.tuner.folds > 0
    check_disk(config.work_dir, cuts, jobs_for(search_policies(config), clean_train))
    first.get(jobs_for({}, clean_train))
    return cuts


def search_id(config: Config, dataset_fingerprint: str, weights_fingerprint: str) -> str:
    """What identifies a search for resuming: data, weights, space and tuner (not max_trials, nor
    where the trials run: a search started on workers resumes in one process and back)."""
    tuner = {k: v for k, v in vars(config.tuner).items() if k not in PLACEMENT_KEYS}
    if tuner["patience"] is None:
        del tuner["patience"]  # (added later: searches without it keep their id, and resume)
    identity = {
        "data": dataset_fingerprint,
        "weights": weights_fingerprint,
        "image_size": config.data.image_size,
        "space": describe(config.search),
        "policies": {name: vars(policy) for name, policy in search_policies(config).items()},
        "tuner": tuner,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trials_csv(trials, children: dict[str, str], objective: str) -> str:
    """One row per ended trial: id, status, score, best epoch, the head hyperparameters, run id."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial_id", "status", objective, "best_epoch", *NAMES, "run_id"])
    for t in trials:
        values = t.hyperparameters.values
        scored = t.score is not None
        writer.writerow(
            [
                t.trial_id,
                t.status,
                f"{t.score:.4f}" if scored else "",
                t.best_step if scored else "",
                *(values.get(name, "") for name in NAMES),
                children.get(t.trial_id, ""),
            ]
        )
    return out.getvalue()


def search_lock(config: Config, sid: str):
    """Context manager that makes this process the only one running search `sid` in work_dir.

    Refuses at once (locks.Busy, naming the holder) instead of waiting: two processes on one
    search would repeat each other's trials. The kernel drops the lock if the holder dies.
    """
    return locks.exclusive(
        Path(config.work_dir) / "tuner" / f"{sid}.lock",
        f"search {sid}",
        hint="a search runs in one process at a time; wait for it to end (or stop it), "
        "then run the same command again to resume or see its results",
    )


def open_search_run(
    config: Config, sid: str, started: float | None = None, stage: dict[str, str] | None = None
) -> tuple[SearchTracker, bool]:
    """The search's MLflow parent run (new, or reopened to resume) and whether the tuner resumes.
    started: when the command started (the run's start, so that its duration is total_seconds);
    stage: a staged tune's stage tags (its number begins the run's name: stage2-search-...)."""
    resume = (Path(config.work_dir) / "tuner" / sid / "oracle.json").is_file() and not config.fresh
    if resume:  # refuse an unreadable saved search before its MLflow run is touched
        check_readable(Path(config.work_dir) / "tuner" / sid)
        remove_stale_partials(Path(config.work_dir) / "tuner" / sid)  # left by a kill mid-save
    tracker = SearchTracker(config.tracking.uri, config.tracking.experiment, config.tuner.objective, config.tuner.folds)
    number = (stage or {}).get(STAGE)
    name = f"{f'stage{number}-' if number else ''}search-{sid[:6]}-{time.strftime('%Y%m%d-%H%M%S')}"
    reopened = tracker.open_search(sid, resume, name, started)
    say(f"{'Resuming' if reopened else 'Started'} search {sid}: MLflow parent run {tracker.parent_id}")
    return tracker, resume


@dataclass(frozen=True)
class SearchInputs:
    """What a search's parent run records about its photos and features, without holding the
    backbone (a distributed search's chief lets it go: its workers extract)."""

    dataset: Dataset
    report: str  # the dataset check's table
    fingerprint: str  # the features' (Features.fingerprint)
    runtime: str
    runtime_why: str  # why the backbone runs there (model.runtime=auto measures: features/choice.py)
    precision: str  # what fine-tuned blocks compute in (model.train_precision)

    @classmethod
    def of(cls, features: Features) -> SearchInputs:
        runtime = (features.runtime, features.runtime_why, features.precision)
        return cls(features.dataset, features.scanned.report, features.fingerprint, *runtime)


# The settings a user compares between searches, as the parent run's params (the whole config is
# its config.yaml): with all ~110 keys MLflow's column picker offered nine "droprate"s.
COMPARED = (
    *("preset", "seed", "data.image_size", "data.interpolation", "model.backbone", "model.runtime"),
    *("tuner.type", "tuner.objective", "tuner.max_trials", "tuner.epochs", "tuner.folds", "tuner.patience"),
    "tuner.max_minutes",
)


def compared_params(config: Config) -> dict[str, object]:
    """COMPARED, and the search space: one param per hyperparameter (space.droprate = [0.0, 0.2, ...])."""
    flat = flatten(config)
    space = {
        f"space.{name}": row["values"] if row["type"] == "choice" else {k: v for k, v in row.items() if k != "type"}
        for name, row in describe(config.search).items()
    }
    return {**{key: flat[key] for key in COMPARED}, **space}


def log_search_setup(tracker: SearchTracker, config: Config, inputs: SearchInputs, stage: dict[str, str]) -> None:
    dataset = inputs.dataset
    tracker.datasets = [dataset.describe(TRAIN), dataset.describe(VALIDATION)]
    tracker.log_setup(
        params=compared_params(config),
        tags={
            "dataset_fingerprint": dataset.fingerprint(),
            "weights_fingerprint": inputs.fingerprint,
            "features_runtime": inputs.runtime,
            "features_runtime_why": inputs.runtime_why,
            "train_precision": inputs.precision,
            "tuner": config.tuner.type,
            PRESET: config.preset,
            **stage,
        },
        texts={"config.yaml": to_yaml(config), "dataset_report.txt": inputs.report},
        dicts={
            "dataset_counts.json": dataset.counts(),
            "search_space.json": describe(config.search),
            "tuner.json": vars(config.tuner),
            "skipped_files.json": dict(dataset.skipped),
        },
    )


def head_hypermodel(config: Config, cuts: dict[int, Features]) -> HeadHyperModel:
    """The HyperModel that trains heads on the search's features."""
    return HeadHyperModel(
        config.search,
        cuts,
        search_policies(config),
        batch_size=config.tuner.batch_size,
        validation_batch_size=config.tuner.validation_batch_size,
        seed=config.seed,
        folds=config.tuner.folds,
    )


def run_trials(config: Config, cuts: dict[int, Features], tracker: SearchTracker, sid: str, resume: bool):
    """Build the head HyperModel and the tuner, run the search in this process; returns (the
    tuner, the trials that ended in this run)."""
    hypermodel = head_hypermodel(config, cuts)
    tuning = config.tuner
    total = tuning.max_trials if tuning.type != "hyperband" else 1
    recorder = TrialRecorder(tracker, tuning.objective, {WORKER: "tuner0", HOST: socket.gethostname()})
    observers = [recorder, TrialProgress(total, tuning.objective, tuning.direction)]
    tuner = make_tuner(tuning, hypermodel, Path(config.work_dir) / "tuner", sid, config.seed, not resume, observers)
    before = {trial.trial_id for trial in finished_trials(tuner)}
    tuner.search(epochs=tuning.epochs, verbose=0)
    return tuner, [trial for trial in finished_trials(tuner) if trial.trial_id not in before]


def work_done(cuts: dict[int, Features], trials: list, trial_seconds: float, epochs: int) -> SearchWork:
    """What this process extracted and trained for the search (trials: those that ended in this run;
    epochs: the epochs its trials trained, SearchTuner.epochs_run)."""
    stages = [features.extractor.stages for features in cuts.values()]
    return SearchWork(
        next(iter(cuts.values())).runtime,
        sum(stage.images for stage in stages),
        sum(stage.backbone + stage.waiting_for_images for stage in stages),
        sum(trial.status == "COMPLETED" for trial in trials),
        epochs,
        trial_seconds,
    )


def summary_of(trials: list, best, children: dict[str, str], config: Config, clock: Stopwatch) -> SearchSummary:
    """The search's end (its finished trials and the best of them): the trials table, every scored
    trial, the timings."""
    objective = config.tuner.objective
    best_info = None
    if best is not None:
        values = best.hyperparameters.values
        best_info = {"trial_id": best.trial_id, "score": best.score, "hyperparameters": values}
        best_info["run_id"] = children.get(best.trial_id)
    clock.laps["total_seconds"] = clock.total()
    tried = [
        {"hyperparameters": HeadParams.from_values(trial.hyperparameters.values).active(), objective: trial.score}
        for trial in trials
    ]
    title = f"{objective} per epoch, {len(trials)} trials ({config.tuner.type}, {config.data.image_size}px)"
    csv_text = trials_csv(trials, children, objective)
    return SearchSummary(objective, best_info, csv_text, clock.laps, title, tried, config.tuner.direction == "max")


def summarize(tuner, tracker: SearchTracker, config: Config, clock: Stopwatch) -> SearchResult:
    """The search's summary, recorded on its parent run (which ends); returns where the results went."""
    trials, best = finished_trials(tuner), best_trial(tuner)
    summary = summary_of(trials, best, tracker.children, config, clock)
    tracker.finish_search(summary)
    return SearchResult(
        parent_run_id=tracker.parent_id,
        search_id=tracker.search_id,
        objective=summary.objective,
        best_trial_id=best.trial_id if best else None,
        best_score=best.score if best else None,
        best_hyperparameters=best.hyperparameters.values if best else {},
        trials=len(trials),
        tracking_uri=config.tracking.uri,
        timings=clock.laps,
        experiment_id=tracker.experiment_id,
        tried=[(dict(t.hyperparameters.values), t.score) for t in trials if t.score is not None],
    )


def run_search(
    config: Config,
    overrides: list[str] | None = None,
    stage: dict[str, str] | None = None,
    deadline: float | None = None,
    after: str | None = None,
) -> SearchResult:
    """Run (or resume) the search that `config` describes. Returns where its results went.

    stage: tags of a staged search's stage (stages.py), for its parent run.
    deadline: a time.monotonic() after which no trial starts (a stage's end), in place of
    tuner.max_minutes counted from the oracle's making, which comes after the scan and extraction.
    after: the search id of the staged tune's search before this one (its workers follow the link).

    With tuner.workers > 0 or tuner.role=chief the trials run in worker processes; `overrides`
    (the command line's key=value words) configure the local ones like this process, and the
    search's own settings are published for them (search/follow.py).
    Raises locks.Busy, before writing anything, if another process is running the same search.
    """
    keras_tuner_fixes.install()
    unsafe = local_locks_warning(config.work_dir)  # (NFS whose locks stay on this machine)
    if unsafe:
        say(unsafe)
    clock = Stopwatch()
    first = open_first_cut(config, clock)
    inputs = SearchInputs.of(first)
    sid = search_id(config, inputs.dataset.fingerprint(), inputs.fingerprint)
    with search_lock(config, sid):
        if config.tuner.distributed:
            del first  # the workers extract the features and train the heads: the chief holds no backbone
            placed = (overrides or [], after)
            result = _search_on_workers(until(config, deadline), inputs, sid, placed, clock, stage or {})
        else:
            result = _search_here(config, first, inputs, sid, clock, stage or {}, deadline)
    say("Timings: " + ", ".join(f"{k.replace('_seconds', '')} {v:.1f} s" for k, v in clock.laps.items()))
    return result


def until(config: Config, deadline: float | None) -> Config:
    """config with tuner.max_minutes set to what is left before `deadline` (None: config as it is)."""
    if deadline is None:
        return config
    return replace(config, tuner=replace(config.tuner, max_minutes=max((deadline - time.monotonic()) / 60, 1e-3)))


def _search_here(config: Config, first: Features, inputs: SearchInputs, sid: str, clock: Stopwatch, stage, deadline):
    cuts = search_features(config, first)
    clock.lap("extraction_seconds")
    warm = sum(features.seconds for features in cuts.values())
    tracker, resume = open_search_run(config, sid, clock.start, stage)
    with tracker.recording():
        log_search_setup(tracker, config, inputs, stage)
        tuner, ran = run_trials(until(config, deadline), cuts, tracker, sid, resume)
        clock.lap("trials_seconds")
        views = sum(features.seconds for features in cuts.values()) - warm
        clock.laps["of_which_views_seconds"] = views  # the trials' time spent extracting or loading features
        work = work_done(cuts, ran, clock.laps["trials_seconds"] - views, tuner.epochs_run)
        return replace(summarize(tuner, tracker, config, clock), work=work)


def _search_on_workers(config: Config, inputs: SearchInputs, sid: str, placed: tuple, clock, stage):
    """placed: (the command line's overrides for local workers, the search before this one or None)."""
    tracker, resume = open_search_run(config, sid, clock.start, stage)
    with tracker.recording():
        log_search_setup(tracker, config, inputs, stage)
        tuner = run_chief_trials(config, sid, resume, placed)
        clock.lap("trials_seconds")
        tracker.load_children()
        return summarize(tuner, tracker, config, clock)
