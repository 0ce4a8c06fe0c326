"""keras-tuner: the Oracle picks hyperparameters, the Tuner runs trials and reports them to observers.

Observers (tracking, progress) hear about trials through the Tuner's own hooks, overridden in the
named subclasses below; this module does not know what they do with it.
"""

from __future__ import annotations

import gc
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from fashion_exp.config import TunerConfig
from fashion_exp.search.oracles import make_oracle, shared_deadline


class TrialObserver:
    """Hears about a search as keras-tuner runs it; override the hooks you need (like a keras Callback)."""

    def search_started(self, done: int, best_score: float | None) -> None:
        """The search begins (or resumes) with `done` trials ended and the best score so far."""

    def trial_started(self, trial: kt.engine.trial.Trial) -> None:
        """A trial begins; its hyperparameters are set."""

    def epoch_ended(self, trial: kt.engine.trial.Trial, epoch: int, logs: dict[str, float]) -> None:
        """One epoch of the trial's fit ended with these metrics."""

    def trial_ended(self, trial: kt.engine.trial.Trial, best_model: keras.Model | None) -> None:
        """The trial ended, scored (COMPLETED, with its best epoch's model) or not (FAILED or INVALID);
        heard just before the oracle records it."""

    def search_ended(self) -> None:
        """The search loop ended normally."""


class StopAtDeadline(keras.callbacks.Callback):
    """Ends a fit at the end of the epoch in which the search's time budget ran out (the best epoch
    so far is kept). Every head a trial trains gets one: with tuner.folds, each fold's."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() >= self.deadline:
            self.model.stop_training = True


class TrialHooks:
    """Mixin for a keras-tuner Tuner: tells observers about the search and frees memory after trials.

    keras-tuner's own extension points (on_search_begin, on_trial_begin, on_epoch_end,
    on_trial_end, on_search_end) are overridden; observers are given at construction.
    """

    def __init__(self, *args, observers: list[TrialObserver], patience: int | None = None, **kwargs):
        self.observers = list(observers)
        self.patience = patience
        self._curves: dict[str, list[float]] = {}  # trial id -> objective per epoch
        self.epochs_run = 0  # epochs trained by this process's trials (search/costs.py measures a trial epoch's cost)
        self._init_tuner(*args, **kwargs)

    def _init_tuner(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # the keras-tuner Tuner this is mixed into

    def _populate_initial_space(self):
        # keras-tuner builds the model once more for each conditional scope it has not seen active
        # (blocks > 0 for block_lr), which would prepare fine-tuning features before any trial
        # needs them. The hypermodel declares the whole space, conditional rows too, without
        # building anything. (keras-tuner names this method as the one to override for that.)
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_search_begin(self):
        super().on_search_begin()
        # TensorFlow, Keras and MLflow leave about 0.5M objects that live as long as the process:
        # out of the collector's sight, each of the ~6 gc.collect a trial runs (keras-tuner's and
        # clear_session's) takes milliseconds instead of 0.3-0.4 s. Garbage from the trials is
        # still collected; what is frozen now is never freed, as it would not have been.
        gc.freeze()
        done, best_score = 0, None
        if not self._is_worker():  # a worker's oracle is a client of the chief's: it holds no trials
            best = best_trial(self)
            done, best_score = len(finished_trials(self)), best.score if best else None
        for observer in self.observers:
            observer.search_started(done, best_score)

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        for observer in self.observers:
            observer.trial_started(trial)

    def run_trial(self, trial, *args, **kwargs):
        deadline = getattr(self.oracle, "deadline", None)
        if deadline is None and self._is_worker():  # a worker's oracle is a client: the chief shares its deadline
            deadline = shared_deadline(Path(self.project_dir))
        if deadline is not None:
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), StopAtDeadline(deadline)]
        return super().run_trial(trial, *args, **kwargs)

    def on_epoch_end(self, trial, model, epoch, logs=None):
        super().on_epoch_end(trial, model, epoch, logs=logs)
        self.epochs_run += 1
        values = {k: float(v) for k, v in (logs or {}).items()}
        for observer in self.observers:
            observer.epoch_ended(trial, epoch, values)
        if self._should_stop(trial.trial_id, values):
            model.stop_training = True  # the trial ends after this epoch, scored by its best epoch

    def _should_stop(self, trial_id: str, logs: dict[str, float]) -> bool:
        """`patience` epochs after the trial's best epoch (the deadline is StopAtDeadline's)."""
        name = self.oracle.objective.name
        if self.patience is None or name not in logs:
            return False
        curve = self._curves.setdefault(trial_id, [])
        curve.append(logs[name] if self.oracle.objective.direction == "max" else -logs[name])
        return len(curve) - 1 - int(np.argmax(curve)) >= self.patience

    def on_trial_end(self, trial):
        # Observers hear of the ended trial before the oracle does: a process that dies in between
        # leaves the trial running in the oracle (it is re-run and its record replaced), never
        # ended in the oracle with its record unfinished.
        ended = self._scored(trial)
        best = None
        if ended.status == kt.engine.trial.TrialStatus.COMPLETED:
            with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
                warnings.simplefilter("ignore")
                best = self.load_model(ended)  # the best epoch's weights (SaveBestEpoch's checkpoint)
        for observer in self.observers:
            observer.trial_ended(ended, best)
        del best
        super().on_trial_end(trial)  # the oracle scores the trial (or queues a failed one for a retry)
        keras.backend.clear_session()  # models of finished trials must not pile up in memory
        gc.collect()

    def _scored(self, trial):
        """The trial with the oracle's record of its epochs, scored as Oracle.score_trial will."""
        reported = self.oracle.get_trial(trial.trial_id)
        reported.status, reported.message = trial.status, trial.message
        if reported.status == kt.engine.trial.TrialStatus.COMPLETED:
            name = self.oracle.objective.name
            reported.score = reported.metrics.get_best_value(name)
            reported.best_step = reported.metrics.get_best_step(name)
            if reported.score is None or np.isnan(reported.score):
                reported.status = kt.engine.trial.TrialStatus.INVALID
        return reported

    def on_search_end(self):
        super().on_search_end()
        for observer in self.observers:
            observer.search_ended()


class SearchTuner(TrialHooks, kt.Tuner):
    """The tuner of random, grid and Bayesian searches: keras-tuner's Tuner with the oracle we pick."""


class HyperbandSearchTuner(TrialHooks, kt.Hyperband):
    """keras-tuner's Hyperband trials (it sets each trial's epochs and carries weights between
    rounds) on the oracle we make (oracles.BudgetHyperbandOracle: with the time budget)."""

    def _init_tuner(self, **kwargs):
        kt.Tuner.__init__(self, **kwargs)  # (kt.Hyperband.__init__ only builds its own oracle; ours is given)


def make_tuner(
    config: TunerConfig,
    hypermodel: kt.HyperModel,
    directory: Path,
    project: str,
    seed: int,
    overwrite: bool,
    observers: list[TrialObserver],
) -> kt.Tuner:
    """A keras-tuner Tuner of the configured type that resumes from `directory/project` unless overwrite."""
    objective = kt.Objective(config.objective, direction=config.direction)
    oracle = make_oracle(config, objective, seed)
    kind = HyperbandSearchTuner if config.type == "hyperband" else SearchTuner
    where: dict[str, Any] = dict(directory=str(directory), project_name=project, overwrite=overwrite)
    return kind(oracle=oracle, hypermodel=hypermodel, observers=observers, patience=config.patience, **where)


def finished_trials(tuner: kt.Tuner) -> list[kt.engine.trial.Trial]:
    """Every ended trial (completed or failed), in the order they were created."""
    trials = tuner.oracle.trials.values()
    done = [t for t in trials if t.status in ("COMPLETED", "FAILED", "INVALID")]
    return sorted(done, key=lambda t: t.trial_id)


def best_trial(tuner: kt.Tuner) -> kt.engine.trial.Trial | None:
    """The best scored trial (keras-tuner's ranking can hold a failed one when nothing scored)."""
    best = [t for t in tuner.oracle.get_best_trials(1) if t.score is not None]
    return best[0] if best else None
