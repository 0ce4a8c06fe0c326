"""search/oracles.py: the time budget is the oracle's, so a chief stops handing out trials and ends."""

import time

import keras_tuner as kt
from keras_tuner.src.distribute import oracle_chief

from fashion_exp.search import oracles


def test_a_spent_budget_stops_each_worker_and_lets_the_chief_end(tmp_path):
    """A worker asking after the budget is told STOPPED and dropped from the oracle's tuners, so the
    chief (which ends when no trial runs and no tuner is left) ends once its workers have asked."""
    hp = kt.HyperParameters()
    hp.Choice("a", [1, 2, 3])
    oracle = oracles.RandomOracle(
        objective=kt.Objective("score", "max"), max_trials=5, seed=1, hyperparameters=hp, max_minutes=60
    )
    oracle._set_project_dir(str(tmp_path), "p")
    for worker in ("worker-a", "worker-b"):  # both run a trial within the budget
        trial = oracle.create_trial(worker)
        assert trial.status == "RUNNING"
        oracle.update_trial(trial.trial_id, {"score": 1.0})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    oracle.deadline = time.monotonic() - 1  # the budget is spent
    assert not oracle_chief.exit_chief(oracle)  # the workers have not been told yet
    assert [oracle.create_trial(worker).status for worker in ("worker-a", "worker-b")] == ["STOPPED", "STOPPED"]
    assert oracle_chief.exit_chief(oracle)
    assert len(oracle.trials) == 2  # no trial started after the budget


def test_every_tuner_type_gets_the_budget():
    from fashion_exp.config import load_config

    for kind in ("random", "bayesian", "grid", "hyperband"):
        config = load_config([f"tuner={kind}", "tuner.max_minutes=1"])
        oracle = oracles.make_oracle(config.tuner, kt.Objective("val_accuracy", "max"), seed=1)
        assert isinstance(oracle, oracles.TimeBudget) and oracle.deadline is not None, kind
