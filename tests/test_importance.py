"""Which hyperparameters matter: fANOVA importances of synthetic trials, and the two figures (no Keras)."""

import itertools

import numpy as np
import pytest

from fashion_exp.tracking import plots
from fashion_exp.tracking.importance import importances

SPACE = {  # conf/search/default.yaml's choice lists
    "learning_rate": [0.0001, 0.001, 0.01, 0.1],
    "size_inner": [10, 100, 1000],
    "droprate": [0.0, 0.2, 0.5, 0.8],
    "augmentation": ["none", "shear_zoom_flip"],
}
ACCURACY = {0.0001: 0.55, 0.001: 0.85, 0.01: 0.8, 0.1: 0.3}  # by learning rate: nothing else changes the score


def grid_trials(n: int = 24, seed: int = 0, **fixed) -> list[dict]:
    """n trials drawn from the choice grid (with `fixed` values), scored by learning rate plus noise."""
    rng = np.random.default_rng(seed)
    grid = [dict(zip(SPACE, values, strict=True)) for values in itertools.product(*SPACE.values())]
    picked = [grid[i] | fixed for i in rng.choice(len(grid), n, replace=False)]
    return [
        {"hyperparameters": hp, "val_accuracy": ACCURACY[hp["learning_rate"]] + rng.normal(0, 0.01)} for hp in picked
    ]


def test_learning_rate_matters_and_droprate_does_not():
    found = importances(grid_trials(), "val_accuracy")
    assert set(found) == set(SPACE)
    assert max(found, key=found.get) == "learning_rate"
    assert found["learning_rate"] > 0.8 and found["droprate"] < 0.05
    assert list(found.values()) == sorted(found.values(), reverse=True)  # largest first
    assert sum(found.values()) == pytest.approx(1.0)


def test_the_same_trials_give_the_same_importances():
    trials = grid_trials(12, seed=3)
    assert importances(trials, "val_accuracy") == importances(trials, "val_accuracy")


def test_a_learning_rate_range_is_read_on_a_log_scale():
    """Log-uniform learning rates: below 10^-2.5 (a third of the log axis, 3% of the linear one) scores
    one more, as x below 0.5 does. On a log scale the two matter about as much; read linearly, the
    learning rate's step would fill 3% of its domain and look unimportant (about 0.18)."""
    rng = np.random.default_rng(0)
    trials = []
    for _ in range(40):
        rate, x = float(10 ** rng.uniform(-4, -1)), float(rng.uniform(0, 1))
        score = (rate < 10**-2.5) + (x < 0.5) + rng.normal(0, 0.01)
        trials.append({"hyperparameters": {"learning_rate": rate, "x": x}, "score": score})
    found = importances(trials, "score")
    assert 0.35 < found["learning_rate"] < 0.65


@pytest.mark.parametrize("failed", [None, float("nan")])
def test_fewer_than_three_finished_trials_give_nothing(failed):
    trials = grid_trials(3)
    assert importances(trials, "val_accuracy")  # three finished trials are enough
    trials[0]["val_accuracy"] = failed
    assert importances(trials, "val_accuracy") == {}
    assert importances(trials[1:], "val_accuracy") == {}


def test_a_constant_hyperparameter_is_left_out():
    found = importances(grid_trials(size_inner=100), "val_accuracy")
    assert set(found) == {"learning_rate", "droprate", "augmentation"}


def test_nothing_to_explain_gives_nothing():
    same_rate = [{"hyperparameters": {"learning_rate": 0.001}, "val_accuracy": s} for s in (0.5, 0.6, 0.7)]
    same_score = [{"hyperparameters": {"learning_rate": r}, "val_accuracy": 0.5} for r in (0.001, 0.01, 0.1)]
    assert importances(same_rate, "val_accuracy") == {}
    assert importances(same_score, "val_accuracy") == {}


def labels(axis) -> list[str]:
    return [tick.get_text() for tick in axis.get_ticklabels()]


def test_parallel_coordinates_draw_learning_rates_on_a_log_axis(tmp_path):
    trials = grid_trials(size_inner=100)
    fig = plots.parallel_coordinates(trials, "val_accuracy", "search: trials")
    path = tmp_path / "parallel_coordinates.png"
    fig.savefig(path)
    assert path.stat().st_size > 0
    host, axes = fig.axes[0], {ax.get_label(): ax for ax in fig.axes}
    assert labels(host.xaxis) == ["learning_rate", "droprate", "augmentation", "val_accuracy"]  # size_inner: constant
    assert axes["learning_rate"].get_yscale() == "log"
    assert labels(axes["learning_rate"].yaxis) == ["1e-4", "1e-3", "1e-2", "1e-1"]
    assert labels(axes["augmentation"].yaxis) == ["none", "shear_zoom_flip"]
    assert axes["droprate"].get_yscale() == "linear"
    lines = host.get_lines()
    assert len(lines) == len(trials)
    assert lines[-1].get_ydata()[-1] == 1.0 and lines[-1].get_linewidth() > lines[0].get_linewidth()  # best on top
    plots.close(fig)


def test_a_learning_rate_range_gets_log_ticks_with_real_values(tmp_path):
    rng = np.random.default_rng(1)
    trials = [
        {"hyperparameters": {"learning_rate": float(10 ** rng.uniform(-4, -1))}, "val_accuracy": float(rng.uniform())}
        for _ in range(15)
    ]
    fig = plots.parallel_coordinates(trials, "val_accuracy", "search: trials")
    fig.savefig(tmp_path / "range.png")
    shown = labels(next(ax for ax in fig.axes if ax.get_label() == "learning_rate").yaxis)
    assert {"1e-3", "1e-2"} <= set(shown)
    plots.close(fig)


def test_importance_bars_put_the_largest_on_top(tmp_path):
    fig = plots.importance_bars({"droprate": 0.02, "learning_rate": 0.9, "augmentation": 0.08}, "search: importance")
    path = tmp_path / "importance.png"
    fig.savefig(path)
    assert path.stat().st_size > 0
    assert labels(fig.axes[0].yaxis) == ["droprate", "augmentation", "learning_rate"]  # barh draws bottom-up
    empty = plots.importance_bars({}, "search: importance")
    empty.savefig(tmp_path / "empty.png")
    assert "no importances" in empty.axes[0].texts[-1].get_text()
    plots.close(fig)
    plots.close(empty)
