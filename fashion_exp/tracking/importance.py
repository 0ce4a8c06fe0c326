"""Which hyperparameters matter: fANOVA importances of a search's finished trials, by Optuna's evaluator.

A trial is a dict `{"hyperparameters": {name: value}, <score>: float}`. The trials go into an
in-memory Optuna study (no sampling, no storage) only so that `FanovaImportanceEvaluator` can read
them; Optuna does every step of the importance maths. The helpers that say which hyperparameters
varied and how their values are spaced are shared with the parallel-coordinates plot.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

MIN_TRIALS = 3  # fewer finished trials cannot tell an effect from noise: no importances at all
MAX_CHOICES = 10  # at most this many distinct numbers, one of them repeated: a choice list, not a range

optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" per call


def finished(trials: list[dict], score: str) -> list[dict]:
    """The trials with a finite `score` (failed, running and pruned trials have none)."""
    return [trial for trial in trials if _number(trial.get(score)) and math.isfinite(trial[score])]


def varying(trials: list[dict]) -> list[str]:
    """Hyperparameters that every trial has and that take at least two values, in first-seen order.
    A constant one cannot matter; one missing from some trials (conditional) cannot be compared."""
    if not trials:
        return []
    names = [name for name in trials[0]["hyperparameters"] if all(name in t["hyperparameters"] for t in trials)]
    return [name for name in names if len({t["hyperparameters"][name] for t in trials}) > 1]


def log_scaled(name: str, values: list[Any]) -> bool:
    """Whether a hyperparameter is read on a log10 scale: learning rates, when all are numbers > 0."""
    rate = "learning_rate" in name or "lr" in name
    return rate and all(_number(value) and value > 0 for value in values)


def choices(values: list[Any]) -> list[Any] | None:
    """The distinct values (numbers ascending, then the rest by their text) when the hyperparameter is
    categorical: anything but numbers, or at most MAX_CHOICES numbers with a repeat, as a choice list
    gives. None for a range."""
    distinct = sorted(set(values), key=_order)  # 1 and 1.0 are one choice (MLflow and YAML disagree on ints)
    if not all(_number(value) for value in values):
        return distinct
    return distinct if len(distinct) <= MAX_CHOICES and len(distinct) < len(values) else None


def importances(trials: list[dict], score: str) -> dict[str, float]:
    """Hyperparameter name -> fANOVA importance (fractions that sum to 1, largest first) of the
    finished trials' `score`. {} when fewer than MIN_TRIALS trials finished, no hyperparameter
    varied, or every score is the same (nothing to explain)."""
    done = finished(trials, score)
    names = varying(done)
    if len(done) < MIN_TRIALS or not names or len({trial[score] for trial in done}) == 1:
        return {}
    study = _study(done, names, score)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded forest: same trials, same answer
    found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {name: float(value) for name, value in found.items()}


def _study(trials: list[dict], names: list[str], score: str) -> optuna.Study:
    """An in-memory study holding the trials' `names` hyperparameters, encoded by `_space`."""
    spaces = {name: _space(name, [trial["hyperparameters"][name] for trial in trials]) for name in names}
    study = optuna.create_study(direction="maximize")
    for trial in trials:
        params = {name: encode(trial["hyperparameters"][name]) for name, (encode, _) in spaces.items()}
        distributions = {name: distribution for name, (_, distribution) in spaces.items()}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=float(trial[score]))
        )
    return study


def _space(name: str, values: list[Any]) -> tuple[Callable[[Any], Any], BaseDistribution]:
    """How one hyperparameter's values enter the study: an encoding and its Optuna distribution.

    fANOVA splits the variance over the distribution's domain, weighting each value by the share
    of the domain around it. A choice list is sampled uniformly over its values, and a categorical
    distribution gives each value that equal share; a float range would not: size_inner
    [10, 100, 1000] on a linear axis leaves 10 under 5% of the domain. (The forest loses the
    values' order; on a sampled grid that cost less accuracy than the float range's weights.)
    Ranges are floats. Optuna's fANOVA ignores `log=True` (it fits on raw values), so a
    learning-rate range enters as log10 values on a linear float distribution: log-uniform
    sampling spreads it evenly there.
    """
    categories = choices(values)
    if categories is not None:
        return _same, CategoricalDistribution(categories)
    encode = math.log10 if log_scaled(name, values) else float
    encoded = [encode(value) for value in values]
    return encode, FloatDistribution(min(encoded), max(encoded))


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _order(value: Any) -> tuple[bool, Any]:
    return (False, value) if _number(value) else (True, str(value))


def _same(value: Any) -> Any:
    return value
