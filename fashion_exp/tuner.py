"""keras-tuner: the Oracle picks hyperparameters, the Tuner runs trials and reports them to observers.

Observers (tracking, progress) hear about trials through the Tuner's own hooks; this module does
not know what they do with it.
"""

from __future__ import annotations

import gc
import itertools
import warnings
from pathlib import Path
from typing import Any, Protocol

import keras
import keras_tuner as kt
import numpy as np

from fashion_exp.config import TunerConfig


class TrialObserver(Protocol):
    def trial_started(self, trial: kt.engine.trial.Trial) -> None: ...

    def epoch_ended(self, trial: kt.engine.trial.Trial, epoch: int, logs: dict[str, float]) -> None: ...

    def trial_ended(self, trial: kt.engine.trial.Trial, best_model: keras.Model | None) -> None: ...


class _Observed:
    """Mixin for a keras-tuner Tuner: forwards trial and epoch hooks to observers, frees memory."""

    observers: list[TrialObserver]

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
        super().on_trial_end(trial)  # the oracle scores the trial (or marks it failed) here
        ended = self.oracle.get_trial(trial.trial_id)
        best = None
        if ended.status == kt.engine.trial.TrialStatus.COMPLETED:
            with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
                warnings.simplefilter("ignore")
                best = self.load_model(ended)  # the best epoch's weights (SaveBestEpoch's checkpoint)
        for observer in self.observers:
            observer.trial_ended(ended, best)
        del best
        keras.backend.clear_session()  # models of finished trials must not pile up in memory
        gc.collect()


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
        names = list(grids)
        untried = [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*grids.values())
            if self._compute_values_hash(dict(zip(names, combo, strict=True))) not in self._tried_so_far
        ]
        if not untried:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        x, y = self._vectorize_trials()
        self.gpr.fit(np.nan_to_num(x, posinf=0, neginf=0), np.nan_to_num(y, posinf=0, neginf=0))
        space = self._nonfixed_space()
        candidates = np.array([[hp.value_to_prob(values[hp.name]) for hp in space] for values in untried])
        mu, sigma = self.gpr.predict(candidates, return_std=True)
        best = int(np.argmin(np.asarray(mu).ravel() - self.beta * np.asarray(sigma).ravel()))  # scores are negated
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": untried[best]}


_TUNERS: dict[str, type] = {
    "random": kt.RandomSearch,
    "bayesian": kt.Tuner,  # with DistinctBayesianOracle
    "grid": kt.GridSearch,
    "hyperband": kt.Hyperband,
}


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
    base = _TUNERS[config.type]
    observed = type(f"Observed{base.__name__}", (_Observed, base), {})
    kwargs: dict[str, Any] = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(config.objective, direction="max"),
        directory=str(directory),
        project_name=project,
        overwrite=overwrite,
        max_consecutive_failed_trials=3,
    )
    if config.type == "bayesian":
        oracle_args = {k: kwargs.pop(k) for k in ("objective", "max_consecutive_failed_trials")}
        kwargs["oracle"] = DistinctBayesianOracle(
            max_trials=config.max_trials, num_initial_points=config.initial_points, seed=seed, **oracle_args
        )
    elif config.type == "hyperband":
        kwargs.update(max_epochs=config.epochs, factor=config.factor, seed=seed)
    elif config.type == "grid":
        kwargs.update(max_trials=config.max_trials)
    else:
        kwargs.update(max_trials=config.max_trials, seed=seed)
    tuner = observed(**kwargs)
    tuner.observers = observers
    return tuner


def finished_trials(tuner: kt.Tuner) -> list[kt.engine.trial.Trial]:
    """Every ended trial (completed or failed), in the order they were created."""
    trials = tuner.oracle.trials.values()
    done = [t for t in trials if t.status in ("COMPLETED", "FAILED", "INVALID")]
    return sorted(done, key=lambda t: t.trial_id)


def best_trial(tuner: kt.Tuner) -> kt.engine.trial.Trial | None:
    best = tuner.oracle.get_best_trials(1)
    return best[0] if best else None
