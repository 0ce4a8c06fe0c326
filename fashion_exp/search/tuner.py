"""keras-tuner: the Oracle picks hyperparameters, the Tuner runs trials and reports them to observers.

Observers (tracking, progress) hear about trials through the Tuner's own hooks, overridden in the
named subclasses below; this module does not know what they do with it.
"""

from __future__ import annotations

import functools
import gc
import itertools
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.src import protos as kt_protos
from keras_tuner.src.engine import conditions as kt_conditions
from keras_tuner.src.tuners import gridsearch as kt_gridsearch

from fashion_exp.config import TunerConfig
from fashion_exp.search import state_files


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


class TrialHooks:
    """Mixin for a keras-tuner Tuner: tells observers about the search and frees memory after trials.

    keras-tuner's own extension points (on_search_begin, on_trial_begin, on_epoch_end,
    on_trial_end, on_search_end) are overridden; observers are given at construction.
    """

    def __init__(self, *args, observers: list[TrialObserver], max_minutes: float | None = None, **kwargs):
        self.observers = list(observers)
        super().__init__(*args, **kwargs)
        if max_minutes is not None:
            self._stop_after(max_minutes)

    def _stop_after(self, minutes: float) -> None:
        """tuner.max_minutes: no trial starts once `minutes` have passed (the one running ends;
        a chief's budget holds for every worker, since they all ask its oracle). Counted from
        now: a resumed search gets the budget again."""
        deadline = time.monotonic() + 60 * minutes
        create = self.oracle.create_trial

        def create_trial(tuner_id):
            if time.monotonic() >= deadline:
                return kt.engine.trial.Trial(self.oracle.get_space(), status=kt.engine.trial.TrialStatus.STOPPED)
            return create(tuner_id)

        self.oracle.create_trial = create_trial

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

    def on_epoch_end(self, trial, model, epoch, logs=None):
        super().on_epoch_end(trial, model, epoch, logs=logs)
        values = {k: float(v) for k, v in (logs or {}).items()}
        for observer in self.observers:
            observer.epoch_ended(trial, epoch, values)

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
    """keras-tuner's Hyperband (it sets each trial's epochs and carries weights between rounds)."""


def _grid(hp) -> list | None:
    """Every value a discrete hyperparameter can take; None for a continuous one."""
    if isinstance(hp, kt.engine.hyperparameters.Choice):
        return list(hp.values)
    if isinstance(hp, kt.engine.hyperparameters.Fixed):
        return [hp.value]
    if isinstance(hp, kt.engine.hyperparameters.Int | kt.engine.hyperparameters.Float) and hp.step:
        return list(hp.values) if hasattr(hp, "values") else None
    return None


class DistinctBayesianOracle(kt.oracles.BayesianOptimizationOracle):
    """keras-tuner's Gaussian-process oracle, made to work on discrete spaces.

    The stock oracle optimises its acquisition over a continuous box and snaps the optimum to the
    nearest choices, which on a choice grid proposes an already-finished point again and again. On
    a discrete space this oracle scores every untried point with the same Gaussian process and
    upper confidence bound and proposes the best; on continuous spaces it keeps the stock proposal
    and replaces a repeat by a random untried point.
    """

    def populate_space(self, trial_id):
        completed = [t for t in self.trials.values() if t.status == "COMPLETED"]
        initial = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)
        grids = {hp.name: _grid(hp) for hp in self.hyperparameters.space}
        if len(completed) < initial or any(g is None for g in grids.values()):
            proposal = super().populate_space(trial_id)
            values = proposal.get("values")
            if values is not None and self._compute_values_hash(values) in self._tried_so_far:
                return self._random_populate_space()
            return proposal
        untried = [values for values in self._points(grids) if not self._duplicate(values)]
        if not untried:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        x, y = self._vectorize_trials()
        self.gpr.fit(np.nan_to_num(x, posinf=0, neginf=0), np.nan_to_num(y, posinf=0, neginf=0))
        space = self._nonfixed_space()
        # an inactive hyperparameter sits at its default, as _vectorize_trials places finished trials
        candidates = np.array(
            [[hp.value_to_prob(values.get(hp.name, hp.default)) for hp in space] for values in untried]
        )
        mu, sigma = self.gpr.predict(candidates, return_std=True)
        best = int(np.argmin(np.asarray(mu).ravel() - self.beta * np.asarray(sigma).ravel()))  # scores are negated
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": untried[best]}

    def _points(self, grids: dict[str, list]) -> list[dict]:
        """Every distinct point of a discrete space: a conditional hyperparameter (block_lr) takes
        values only where its condition holds (blocks > 0), so blocks=0 is one point, not one per
        block_lr."""
        points = {}
        for combo in itertools.product(*grids.values()):
            values = {}
            for hp, value in zip(self.hyperparameters.space, combo, strict=True):
                if all(condition.is_active(values) for condition in hp.conditions):
                    values[hp.name] = value
            points.setdefault(self._compute_values_hash(values), values)
        return list(points.values())


class ResumableGridOracle(kt.oracles.GridSearchOracle):
    """keras-tuner's grid oracle, made resumable.

    Its place in the grid (the tried points in grid order, and the points whose successor is to
    be tried next) is not part of its saved state, so a resumed grid search, interrupted or given
    more tuner.max_trials, found nothing left to try and ended with the trials it had. Both are
    rebuilt here from the reloaded trials: every tried point is expanded again, and a successor
    already tried is skipped as keras-tuner's own loop skips it.
    """

    def set_state(self, state):
        super().set_state(state)
        by_grid_order = functools.cmp_to_key(
            lambda a, b: self._compare(a.hyperparameters.values, b.hyperparameters.values)
        )
        tried = sorted(self.trials.values(), key=by_grid_order)
        self._ordered_ids = kt_gridsearch.LinkedList()  # (keras-tuner's own structure; no public one)
        for trial in tried:
            self._ordered_ids.insert(trial.trial_id)
        self._populate_next = [trial.trial_id for trial in tried]


def make_oracle(config: TunerConfig, objective: kt.Objective, seed: int) -> kt.Oracle:
    """The oracle of a random, grid or Bayesian search (Hyperband builds its own)."""
    common = dict(
        objective=objective,
        max_trials=config.max_trials,
        seed=seed,
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
    )
    if config.type == "bayesian":
        return DistinctBayesianOracle(num_initial_points=config.initial_points, **common)
    if config.type == "grid":
        return ResumableGridOracle(**common)
    return kt.oracles.RandomSearchOracle(**common)


def _parent_to_proto(condition: kt_conditions.Parent):
    """keras-tuner 1.4.8's Parent.to_proto without its stray `print(self.values[0])`, which put a
    line on the chief's terminal each time a conditional space (block_lr) crossed gRPC, several
    times a trial."""
    proto = kt_protos.get_proto()
    kinds = ((bool, "boolean_value"), (str, "string_value"), (int, "int_value"))  # bool first: it is an int
    field = next((name for kind, name in kinds if isinstance(condition.values[0], kind)), "float_value")
    values = [proto.Value(**{field: value}) for value in condition.values]
    return proto.Condition(parent=proto.Condition.Parent(name=condition.name, values=values))


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
    state_files.install()  # its state files are replaced whole, never left half-written by a kill
    kt_conditions.Parent.to_proto = _parent_to_proto  # (no public way to mend a library print)
    objective = kt.Objective(config.objective, direction=config.direction)
    where: dict[str, Any] = dict(directory=str(directory), project_name=project, overwrite=overwrite)
    if config.type == "hyperband":
        return HyperbandSearchTuner(
            hypermodel=hypermodel,
            objective=objective,
            max_epochs=config.epochs,
            factor=config.factor,
            seed=seed,
            max_consecutive_failed_trials=config.max_consecutive_failed_trials,
            observers=observers,
            max_minutes=config.max_minutes,
            **where,
        )
    oracle = make_oracle(config, objective, seed)
    budget = config.max_minutes
    return SearchTuner(oracle=oracle, hypermodel=hypermodel, observers=observers, max_minutes=budget, **where)


def finished_trials(tuner: kt.Tuner) -> list[kt.engine.trial.Trial]:
    """Every ended trial (completed or failed), in the order they were created."""
    trials = tuner.oracle.trials.values()
    done = [t for t in trials if t.status in ("COMPLETED", "FAILED", "INVALID")]
    return sorted(done, key=lambda t: t.trial_id)


def best_trial(tuner: kt.Tuner) -> kt.engine.trial.Trial | None:
    """The best scored trial (keras-tuner's ranking can hold a failed one when nothing scored)."""
    best = [t for t in tuner.oracle.get_best_trials(1) if t.score is not None]
    return best[0] if best else None
