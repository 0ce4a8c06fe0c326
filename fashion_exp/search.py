"""The `tune` job: dataset check -> cached features -> keras-tuner search -> MLflow parent/child runs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fashion_exp import space
from fashion_exp.config import AugmentationPolicy, Config, flatten, to_yaml
from fashion_exp.data import TRAIN, VALIDATION, Decoder, report, scan_configured
from fashion_exp.features import FeatureCache, build_backbone, extract_features, jobs_for_policy
from fashion_exp.head import HeadHyperModel
from fashion_exp.tracking import SearchTracker
from fashion_exp.tuner import best_trial, finished_trials, make_tuner


@dataclass
class SearchResult:
    parent_run_id: str
    search_id: str
    best_trial_id: str | None
    best_score: float | None
    best_hyperparameters: dict
    trials: int
    tracking_uri: str
    timings: dict[str, float]


class Stopwatch:
    """Named laps in seconds: each lap() records the time since the previous one."""

    def __init__(self):
        self.start = self.last = time.time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.laps[name] = now - self.last
        self.last = now


class TrialProgress:
    """A progress bar over trials with the best score so far (a TrialObserver)."""

    def __init__(self, total: int, done: int, best: float | None):
        self.bar = tqdm(total=total, initial=done, desc="Trials", unit="trial")
        self.best = best
        if best is not None:
            self.bar.set_postfix(best_val_accuracy=f"{best:.4f}")

    def trial_started(self, trial) -> None:
        pass

    def epoch_ended(self, trial, epoch, logs) -> None:
        pass

    def trial_ended(self, trial, best_model) -> None:
        if trial.status == "COMPLETED" and (self.best is None or trial.score > self.best):
            self.best = trial.score
            self.bar.set_postfix(best_val_accuracy=f"{self.best:.4f}")
        elif trial.status != "COMPLETED":
            tqdm.write(f"Trial {trial.trial_id} failed: {(trial.message or '').strip().splitlines()[-1:]}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def search_id(config: Config, dataset_fingerprint: str, weights_fingerprint: str) -> str:
    """What identifies a search for resuming: data, weights, space and tuner (not max_trials)."""
    tuner = {k: v for k, v in vars(config.tuner).items() if k != "max_trials"}
    policies = {name: vars(config.augmentation[name]) for name in config.search.augmentation.values}
    identity = {
        "data": dataset_fingerprint,
        "weights": weights_fingerprint,
        "image_size": config.data.image_size,
        "space": space.describe(config),
        "policies": policies,
        "tuner": tuner,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def trials_csv(trials, children: dict[str, str]) -> str:
    out = io.StringIO()
    names = ["learning_rate", "size_inner", "droprate", "augmentation"]
    writer = csv.writer(out)
    writer.writerow(["trial_id", "status", "val_accuracy", "best_epoch", *names, "run_id"])
    for t in trials:
        values = t.hyperparameters.values
        score = "" if t.score is None else f"{t.score:.4f}"
        writer.writerow(
            [
                t.trial_id,
                t.status,
                score,
                t.best_step if t.score is not None else "",
                *(values.get(n, "") for n in names),
                children.get(t.trial_id, ""),
            ]
        )
    return out.getvalue()


def run_search(config: Config, echo=print) -> SearchResult:
    """Run (or resume) the search that `config` describes. Returns where its results went."""
    work = Path(config.work_dir)
    clock = Stopwatch()

    dataset = scan_configured(config.data, [TRAIN, VALIDATION], config.work_dir)
    dataset_report = report(dataset)
    echo(dataset_report)
    clock.lap("scan_seconds")

    backbone = build_backbone(config.model, config.data.image_size, config.seed)
    clock.lap("backbone_seconds")
    sid = search_id(config, dataset.fingerprint(), backbone.fingerprint)
    tuner_dir = work / "tuner"
    has_state = (tuner_dir / sid / "oracle.json").is_file()
    resume = has_state and not config.fresh

    tracker = SearchTracker(config.tracking.uri, config.tracking.experiment)
    reopened = tracker.open_search(sid, resume, run_name=f"search-{sid[:6]}-{time.strftime('%Y%m%d-%H%M%S')}")
    echo(f"{'Resuming' if reopened else 'Started'} search {sid}: MLflow parent run {tracker.parent_id}")
    try:
        tracker.log_setup(
            params=flatten(config),
            tags={
                "dataset_fingerprint": dataset.fingerprint(),
                "weights_fingerprint": backbone.fingerprint,
                "tuner": config.tuner.type,
            },
            texts={"config.yaml": to_yaml(config), "dataset_report.txt": dataset_report},
            dicts={
                "dataset_counts.json": dataset.counts(),
                "search_space.json": space.describe(config),
                "tuner.json": vars(config.tuner),
                "skipped_files.json": dict(dataset.skipped),
            },
        )
        policies = {name: config.augmentation[name] for name in config.search.augmentation.values}
        val_job = jobs_for_policy(VALIDATION, AugmentationPolicy())[0]  # validation is never augmented
        train_jobs = {name: jobs_for_policy(TRAIN, policy) for name, policy in policies.items()}
        all_jobs = [val_job, *[j for jobs in train_jobs.values() for j in jobs]]
        decoder = Decoder(config.data.image_size, config.data.interpolation, config.data.max_image_pixels)
        features = extract_features(
            backbone, dataset, FeatureCache(work / "features"), all_jobs, decoder, config.model.batch_size, config.seed
        )
        clock.lap("extraction_seconds")
        hypermodel = HeadHyperModel(
            config.search,
            {name: np.stack([features[j] for j in jobs]) for name, jobs in train_jobs.items()},
            dataset.labels(TRAIN),
            features[val_job],
            dataset.labels(VALIDATION),
            n_classes=len(dataset.classes),
            batch_size=config.tuner.batch_size,
            seed=config.seed,
        )
        del backbone
        tuner = make_tuner(config.tuner, hypermodel, tuner_dir, sid, config.seed, overwrite=not resume, observers=[])
        done = finished_trials(tuner)
        prior_best = best_trial(tuner)
        total = config.tuner.max_trials if config.tuner.type != "hyperband" else max(len(done), 1)
        progress = TrialProgress(total, len(done), prior_best.score if prior_best else None)
        tuner.observers = [tracker, progress]
        tuner.search(epochs=config.tuner.epochs, verbose=0)
        progress.close()
        clock.lap("trials_seconds")
    except KeyboardInterrupt:
        tracker.abort("KILLED")
        raise
    except BaseException:
        tracker.abort("FAILED")
        raise

    trials = finished_trials(tuner)
    best = best_trial(tuner)
    best_info = None
    if best is not None:
        best_info = {
            "trial_id": best.trial_id,
            "score": best.score,
            "hyperparameters": best.hyperparameters.values,
            "run_id": tracker.children.get(best.trial_id),
        }
    clock.laps["total_seconds"] = time.time() - clock.start
    tracker.finish_search(
        best_info,
        trials_csv(trials, tracker.children),
        clock.laps,
        f"val_accuracy per epoch, {len(trials)} trials ({config.tuner.type}, {config.data.image_size}px)",
        status="FINISHED" if best is not None else "FAILED",
    )
    echo("Timings: " + ", ".join(f"{k.replace('_seconds', '')} {v:.1f} s" for k, v in clock.laps.items()))
    return SearchResult(
        parent_run_id=tracker.parent_id,
        search_id=sid,
        best_trial_id=best.trial_id if best else None,
        best_score=best.score if best else None,
        best_hyperparameters=best.hyperparameters.values if best else {},
        trials=len(trials),
        tracking_uri=config.tracking.uri,
        timings=clock.laps,
    )
