"""A search in MLflow (SearchTracker): one parent run per search, one nested child run per trial,
with their curves, checkpoints and the comparison plot. Params, tags and texts go through RunLogger
(or recorded_tags), which hides the passwords in them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fashion_exp.errors import ConfigError, last_line
from fashion_exp.hyperparameters import label
from fashion_exp.redact import redact
from fashion_exp.screen import say
from fashion_exp.tracking import plots
from fashion_exp.tracking.experiments import connect, share_view, trials_view
from fashion_exp.tracking.importance import importances
from fashion_exp.tracking.run_logger import RunLogger, recorded_tags, source_tags, status_for
from fashion_exp.tracking.system_metrics import rss_mb, system_metrics
from fashion_exp.tracking.tags import EPOCH, KIND, NOTE, PARENT, SEARCH_ID, TRIAL_ID

EXPERIMENT_NOTE = (
    "fashion_exp searches: one parent run per search (a staged tune: a tune run, its stages' searches nested in it), "
    "a nested run per trial. Sort trials by val_accuracy (their score). Open with "
    "#/experiments/<id>/runs?workflowType=machine_learning, or `python -m fashion_exp ui`."
)


def searched(trials: list[dict[str, Any]]) -> list[str]:
    """The hyperparameters the trials tried more than one value of (all of them for one trial)."""
    names = list(dict.fromkeys(name for trial in trials for name in trial["hyperparameters"]))
    varied = [n for n in names if len({repr(t["hyperparameters"].get(n)) for t in trials}) > 1]
    return varied or names


@dataclass(frozen=True)
class SearchSummary:
    """What a search ended with, as its parent run records it (SearchTracker.finish_search)."""

    objective: str
    best: dict[str, Any] | None  # {trial_id, score, hyperparameters, run_id} of the best trial, or None
    trials_csv: str  # one row per ended trial
    timings: dict[str, float]
    curves_title: str  # the comparison plot's title
    trials: list[dict[str, Any]] = field(default_factory=list)  # {"hyperparameters": {...}, objective: score}
    higher_is_better: bool = True


class SearchTracker:
    """Records a search in MLflow: the parent run, and one nested child run per trial.

    It is told about trials in plain values (ids, params, metrics, a Keras model): it knows
    MLflow, not keras-tuner.
    """

    def __init__(self, uri: str, experiment: str, objective: str = "val_accuracy", folds: int = 0):
        self.uri = uri
        self.client, self.experiment_id = connect(uri, experiment, EXPERIMENT_NOTE)
        self.objective, self.folds = objective, folds  # what a trial's score is, for the runs' descriptions
        self.parent_id: str | None = None
        self.owns_parent = True  # False on a search worker: the chief starts and ends the parent run
        self.search_id: str | None = None
        self.children: dict[str, str] = {}  # trial id -> child run id
        self.datasets: list[dict[str, Any]] = []  # Dataset.describe() of the splits trials use: each child's inputs
        self._started: dict[str, float] = {}
        self._history: dict[str, dict[str, list[float]]] = {}

    # ---- what the runs are (their descriptions in mlflow ui) ------------------------------

    def _score(self) -> str:
        how = (
            f"the mean over {self.folds} cross-validation folds"
            if self.folds
            else "its best epoch's (as ModelCheckpoint keeps)"
        )
        return f"`{self.objective}` is the trial's score: {how}; `epoch_*` are its per-epoch curves"

    def describe_search(self, search_id: str) -> str:
        return (
            f"Search {search_id}: one nested run per trial (its name says what it tried). {self._score()}. "
            f"This run's `{self.objective}` is its best trial's (tag best_trial_id), which train-final trains; "
            "params: the settings to compare and the space (space.*); the whole config is config.yaml."
        )

    def describe_trial(self, trial_id: str) -> str:
        return f"Trial {trial_id} of this search's parent run. {self._score()}; checkpoint/head.keras holds that head."

    # ---- the parent run -----------------------------------------------------------------

    def open_search(self, search_id: str, resume: bool, run_name: str, started: float | None = None) -> bool:
        """Start (or with resume, reopen) the parent run of search_id. Returns True if reopened.
        started: time.time() of the command's start (the scan and extraction come before the run)."""
        self.search_id = search_id
        if resume:
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{SEARCH_ID}` = '{search_id}' and tags.`{KIND}` = 'search'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                self.parent_id = found[0].info.run_id
                self.client.update_run(self.parent_id, status="RUNNING")
                self.load_children()
                return True
        at = None if started is None else int(started * 1000)
        tags = {**source_tags(), SEARCH_ID: search_id, KIND: "search", NOTE: self.describe_search(search_id)}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags, start_time=at)
        self.parent_id = run.info.run_id
        return False

    def attach(self, search_id: str, chief: str) -> None:
        """Log trials under the running parent run of search_id, which a chief at `chief` owns
        (a search worker). ConfigError if no such search is running in this store."""
        self.search_id = search_id
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{SEARCH_ID}` = '{search_id}' and tags.`{KIND}` = 'search' "
            "and attributes.status = 'RUNNING'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise ConfigError(
                f"no search {search_id} is running in {redact(self.uri)}: the chief at {chief} runs another search, or "
                "logs elsewhere; start tune-worker with the chief's overrides and its tracking.uri"
            )
        self.parent_id = found[0].info.run_id
        self.owns_parent = False

    def load_children(self) -> None:
        """Read the trial -> child run map back from MLflow (trials run by other processes included)."""
        self.children = {child.data.tags[TRIAL_ID]: child.info.run_id for child in self._child_runs()}

    @contextmanager
    def recording(self) -> Iterator[SearchTracker]:
        """Inside the block an error ends the running trial's run and the parent run: KILLED on
        Ctrl-C, FAILED otherwise (finish_search ends the parent when all went well). The process
        that owns the parent run records system metrics on it meanwhile."""
        try:
            with system_metrics(self.uri, self.parent_id if self.owns_parent else None):
                yield self
        except BaseException as err:
            self.abort(status_for(err))
            raise

    def _child_runs(self) -> list:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{self.parent_id}'",
            max_results=10_000,
        )

    def log_setup(
        self, params: dict[str, str], tags: dict[str, str], texts: dict[str, str], dicts: dict[str, Any]
    ) -> None:
        """Flat params, tags, text artifacts (file name -> text), JSON artifacts and the datasets
        (self.datasets) on the parent run."""
        run = RunLogger(self.client, self.parent_id)
        run.datasets(self.datasets)
        run.params(params)
        run.tags(tags)
        for name, text in texts.items():
            run.text(text, name)
        for name, value in dicts.items():
            run.json(value, name)

    def finish_search(self, summary: SearchSummary) -> None:
        """Best hyperparameters, timings, the trials table, the comparison plot and which
        hyperparameters mattered; then end the parent run: FINISHED if a trial completed, else FAILED."""
        run, best, objective, trials = (
            RunLogger(self.client, self.parent_id),
            summary.best,
            summary.objective,
            summary.trials,
        )
        run.metrics(summary.timings)
        if best is not None:
            run.params({f"best.{k}": v for k, v in best["hyperparameters"].items()})
            run.tags({"best_trial_id": best["trial_id"], "best_run_id": best.get("run_id") or ""})
            run.metrics({objective: best["score"]})  # the best trial's score, under the trials' name for it
        run.text(summary.trials_csv, "trials.csv")
        curves = self.curves(objective)
        if curves:
            best_label = f"trial {best['trial_id']}" if best else None
            figure = plots.compare_trials(curves, best_label, summary.curves_title, objective)
            run.figure(figure, f"plots/{objective}_by_trial.png")
        if trials:
            self._what_mattered(run, trials, objective, summary.higher_is_better)
            view = trials_view(self.parent_id, objective, summary.higher_is_better, searched(trials))
            share_view(self.client, self.experiment_id, self.parent_id, view)  # (the link tune prints)
        run.end("FINISHED" if best is not None else "FAILED")

    @staticmethod
    def _what_mattered(run: RunLogger, trials: list[dict[str, Any]], objective: str, higher_is_better: bool) -> None:
        """The trials in parallel coordinates (log learning-rate axis, coloured by score), and
        Optuna's fANOVA importance of each hyperparameter as metrics (importance.<name>) and a plot."""
        title = f"{len(trials)} trials, coloured by {objective}"
        figure = plots.parallel_coordinates(trials, objective, title, higher_is_better=higher_is_better)
        run.figure(figure, "plots/parallel_coordinates.png")
        found = importances(trials, objective)
        if found:
            run.metrics({f"importance.{name}": value for name, value in found.items()})
            figure = plots.importance_bars(found, f"What mattered for {objective} (fANOVA, {len(trials)} trials)")
            run.figure(figure, "plots/hyperparameter_importance.png")

    def curves(self, metric: str) -> dict[str, list[float]]:
        """`metric` per epoch of every finished child run, read back from MLflow."""
        out = {}
        for child in sorted(self._child_runs(), key=lambda r: r.data.tags.get(TRIAL_ID, "")):
            if child.info.status != "FINISHED":
                continue
            history = self.client.get_metric_history(child.info.run_id, f"{EPOCH}{metric}")
            if not history and f"{EPOCH}{metric}" not in child.data.metrics:  # a trial from before 2026-12-01
                history = self.client.get_metric_history(child.info.run_id, metric)  # (curves had no prefix)
            out[f"trial {child.data.tags[TRIAL_ID]}"] = [m.value for m in sorted(history, key=lambda m: m.step)]
        return out

    def abort(self, status: str) -> None:
        """End the running child (if any) and the parent with status (KILLED on Ctrl-C, FAILED on
        error). The parent's owner also ends the children other processes left running: a worker
        killed after its grace (a loaded machine) could not end its trial's run itself."""
        for trial_id in list(self._started):
            self.client.set_terminated(self.children[trial_id], status=status)
        self._started.clear()
        if self.parent_id and self.owns_parent:
            try:
                for child in self._child_runs():
                    if child.info.status == "RUNNING":
                        self.client.set_terminated(child.info.run_id, status=status)
            except Exception as err:  # (a store that fails here must not keep the parent RUNNING)
                say(f"Could not end the trial runs left running: {redact(last_line(str(err)))}")
            self.client.set_terminated(self.parent_id, status=status)

    # ---- child runs -----------------------------------------------------------------------

    def start_trial(self, trial_id: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> None:
        """A child run for the trial, replacing the run of an interrupted attempt at it (made by
        this process or any other: a killed worker's, say), so each trial has one run."""
        self.children.pop(trial_id, None)
        stale = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT}` = '{self.parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
        )
        for run in stale:
            self.client.delete_run(run.info.run_id)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"t{trial_id} {label(params)}",  # what it tried, readable in the runs table
            tags={
                **source_tags(),
                **{PARENT: self.parent_id, TRIAL_ID: trial_id, KIND: "trial", NOTE: self.describe_trial(trial_id)},
                **recorded_tags(tags or {}),
            },
        )
        self.children[trial_id] = run.info.run_id
        self._started[trial_id] = time.time()
        self._history[trial_id] = {}
        RunLogger(self.client, run.info.run_id).params(params)
        RunLogger(self.client, run.info.run_id).datasets(self.datasets)

    def log_epoch(self, trial_id: str, epoch: int, logs: dict[str, float]) -> None:
        """One epoch's metrics, as curves (epoch_val_accuracy, ...): the run's own val_accuracy is its score."""
        RunLogger(self.client, self.children[trial_id]).metrics({f"{EPOCH}{k}": v for k, v in logs.items()}, step=epoch)
        history = self._history[trial_id]
        for key, value in logs.items():
            history.setdefault(key, []).append(value)

    def end_trial(self, trial_id: str, title: str, best: dict[str, float] | None, model=None, error: str = "") -> None:
        """Close the trial's run: with its score, curves and checkpoint (best: metric name -> value:
        the objective's score and best_epoch; the other validation metrics of that epoch are added),
        or, when best is None, FAILED with the error message."""
        run = RunLogger(self.client, self.children[trial_id])
        seconds = time.time() - self._started.pop(trial_id, time.time())
        run.metrics({"trial_seconds": seconds, "rss_mb": rss_mb()})
        history = self._history.pop(trial_id, {})
        if best is None or model is None:
            message = error.strip() or "unknown error"
            run.tags({"error": last_line(message)})
            run.text(message, "error.txt")
            run.end("FAILED")
            return
        epoch = int(best.get("best_epoch", -1))
        that_epoch = {k: v[epoch] for k, v in history.items() if k.startswith("val_") and 0 <= epoch < len(v)}
        run.metrics({**that_epoch, **best})
        if history:
            run.figure(plots.learning_curves(history, title), "plots/learning_curves.png")
        run.keras(model, "checkpoint/head.keras")  # the best epoch's weights, as ModelCheckpoint keeps
        run.end("FINISHED")
