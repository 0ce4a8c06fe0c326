"""keras-tuner: the Oracle picks hyperparameters, the Tuner runs trials and reports them to observers.

Observers (tracking, progress) hear about trials through the Tuner's own hooks; this module does
not know what they do with it.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Any, Protocol

import keras
import keras_tuner as kt

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


_TUNERS: dict[str, type] = {
    "random": kt.RandomSearch,
    "bayesian": kt.BayesianOptimization,
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
    if config.type == "hyperband":
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
