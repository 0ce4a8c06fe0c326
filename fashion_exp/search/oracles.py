"""The oracles: what a search tries next. keras-tuner's, named here with tuner.max_minutes.

TimeBudget is a mixin for a keras-tuner Oracle: once the budget has passed, no new point is
proposed (populate_space answers STOPPED). A trial running in this process stops at the end of its
current epoch (tuner.TrialHooks reads the deadline) and keeps its best epoch; so does a worker's,
which reads the chief's deadline from the shared work folder (deadline_path: the chief writes it
as wall-clock time, each worker turns it into its own clock). A trial waiting for a retry is still
handed out first, as keras-tuner's create_trial does; the tuner that is told STOPPED is dropped
from the oracle's tuners, so a chief ends once its workers have. A chief's budget holds for every
worker, since they all ask its oracle. It is counted from the oracle's making: a resumed search
gets the budget again (a staged search keeps a ledger of what its stages spent: stages.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras_tuner as kt

from fashion_exp import writers
from fashion_exp.config import TunerConfig
from fashion_exp.search.keras_tuner_fixes import DistinctBayesianOracle, ResumableGridOracle


class TimeBudget:
    """Mixin for a keras-tuner Oracle: no trial starts after `max_minutes` (None: no budget)."""

    def __init__(self, *args, max_minutes: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes

    def populate_space(self, trial_id):
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)


class RandomOracle(TimeBudget, kt.oracles.RandomSearchOracle):
    """keras-tuner's random search, with a time budget."""


class BayesianOracle(TimeBudget, DistinctBayesianOracle):
    """The Gaussian-process search (keras_tuner_fixes.DistinctBayesianOracle), with a time budget."""


class GridOracle(TimeBudget, ResumableGridOracle):
    """The grid search (keras_tuner_fixes.ResumableGridOracle), with a time budget."""


class BudgetHyperbandOracle(TimeBudget, kt.oracles.HyperbandOracle):
    """keras-tuner's Hyperband oracle, with a time budget."""


def make_oracle(config: TunerConfig, objective: kt.Objective, seed: int) -> kt.Oracle:
    """The oracle tuner.type names, with tuner.max_minutes as its budget."""
    common = dict(
        objective=objective,
        seed=seed,
        max_consecutive_failed_trials=config.max_consecutive_failed_trials,
        max_minutes=config.max_minutes,
    )
    if config.type == "hyperband":
        return BudgetHyperbandOracle(max_epochs=config.epochs, factor=config.factor, **common)
    if config.type == "bayesian":
        return BayesianOracle(max_trials=config.max_trials, num_initial_points=config.initial_points, **common)
    if config.type == "grid":
        return GridOracle(max_trials=config.max_trials, **common)
    return RandomOracle(max_trials=config.max_trials, **common)


def deadline_path(search_dir) -> Path:
    """Where a chief keeps its oracle's deadline for the workers (search_dir: work_dir/tuner/<search id>)."""
    return Path(search_dir) / "deadline.json"


def share_deadline(oracle, search_dir) -> None:
    """Write the chief's deadline (wall-clock seconds) where its workers read it; none: remove it."""
    path = deadline_path(search_dir)
    if getattr(oracle, "deadline", None) is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = writers.temporary(path)
    partial.write_text(json.dumps({"deadline_unix": time.time() + oracle.deadline - time.monotonic()}))
    partial.replace(path)


def shared_deadline(search_dir) -> float | None:
    """The chief's deadline as this process's time.monotonic(), or None (no budget, or unreadable)."""
    try:
        unix = float(json.loads(deadline_path(search_dir).read_text())["deadline_unix"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return time.monotonic() + unix - time.time()
