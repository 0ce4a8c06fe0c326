"""keras-tuner's fixes (search/keras_tuner_fixes.py): each works, and each test of the stock
behaviour fails the day upstream changes it, so the fix is looked at again (removed, or mended)."""

import inspect
import json

import keras_tuner as kt
import pytest
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.distribute import oracle_client
from keras_tuner.src.engine import conditions as kt_conditions
from keras_tuner.src.tuners import gridsearch as kt_gridsearch

from fashion_exp.search import keras_tuner_fixes as fixes
from fashion_exp.search import state_files


def space() -> kt.HyperParameters:
    hp = kt.HyperParameters()
    hp.Choice("a", [1, 2, 3])
    hp.Choice("b", [1, 2])
    return hp


def run_trials(oracle: kt.Oracle, count: int) -> list:
    """Ask for `count` trials, each scored lower than the last; returns their values (or the status
    that ended the asking)."""
    got = []
    for i in range(count):
        trial = oracle.create_trial("tuner0")
        if trial.status != "RUNNING":
            return [*got, trial.status]
        got.append(tuple(trial.hyperparameters.values.values()))
        oracle.update_trial(trial.trial_id, {"score": float(-i)})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        oracle.save()  # as the Tuner does once a trial has ended
    return got


def oracle_in(cls, directory, **kwargs) -> kt.Oracle:
    oracle = cls(objective=kt.Objective("score", "max"), max_trials=12, seed=1, hyperparameters=space(), **kwargs)
    oracle._set_project_dir(str(directory), "p")
    return oracle


def test_the_version_the_fixes_were_written_for_is_installed():
    assert kt.__version__ == fixes.KERAS_TUNER, "keras-tuner changed: run this file, then review every fix"


def test_stock_grid_oracle_still_loses_its_place_on_resume_and_ours_does_not(tmp_path):
    """keras-team/keras-tuner#1055."""
    first = run_trials(oracle_in(kt.oracles.GridSearchOracle, tmp_path), 2)
    assert first == [(1, 1), (1, 2)]
    stock = oracle_in(kt.oracles.GridSearchOracle, tmp_path)
    stock.reload()
    assert run_trials(stock, 4) == ["STOPPED"]  # (four points left) upstream fixed it once this fails
    ours = oracle_in(fixes.ResumableGridOracle, tmp_path)
    ours.reload()
    assert run_trials(ours, 5) == [(2, 1), (2, 2), (3, 1), (3, 2), "STOPPED"]  # the rest of the grid, once each


def test_stock_bayesian_oracle_still_repeats_points_and_ours_does_not(tmp_path):
    """keras-team/keras-tuner#608: on a discrete space the stock proposal snaps to finished points."""
    stock = run_trials(oracle_in(kt.oracles.BayesianOptimizationOracle, tmp_path / "stock", num_initial_points=2), 6)
    assert len(set(stock)) < len(stock)  # upstream fixed it once this fails: drop DistinctBayesianOracle
    ours = run_trials(oracle_in(fixes.DistinctBayesianOracle, tmp_path / "ours", num_initial_points=2), 7)
    assert len(set(ours[:6])) == 6 and ours[6] == "STOPPED"  # every point once, then done


def test_stock_parent_to_proto_still_prints_and_ours_gives_the_same_proto(capsys):
    condition = kt_conditions.Parent("blocks", [1, 2])
    stock = fixes.STOCK_PARENT_TO_PROTO(condition)
    assert capsys.readouterr().out == "1\n"  # upstream removed the print once this fails: drop parent_to_proto
    assert fixes.parent_to_proto(condition) == stock and capsys.readouterr().out == ""
    for values in (["relu", "tanh"], [True], [0.5, 1.5]):
        condition = kt_conditions.Parent("x", values)
        assert fixes.parent_to_proto(condition) == fixes.STOCK_PARENT_TO_PROTO(condition)


def test_installed_fixes_are_what_keras_tuner_calls(tmp_path, monkeypatch):
    monkeypatch.setattr(kt_utils, "save_json", kt_utils.save_json)
    monkeypatch.setattr(kt_conditions.Parent, "to_proto", kt_conditions.Parent.to_proto)
    fixes.install()
    fixes.install()  # idempotent
    assert kt_utils.save_json is state_files.save_json_atomically
    assert kt_conditions.Parent.to_proto is fixes.parent_to_proto
    written = []
    monkeypatch.setattr(state_files, "STOCK_SAVE_JSON", lambda *a: written.append(a))  # (remote paths only)
    oracle = oracle_in(kt.oracles.RandomSearchOracle, tmp_path)
    run_trials(oracle, 1)
    state = json.loads((tmp_path / "p" / "oracle.json").read_text())  # saved through the atomic writer
    assert state["ongoing_trials"] == {} and written == []
    stock = inspect.getsource(state_files.STOCK_SAVE_JSON)
    assert "replace" not in stock and "rename" not in stock  # upstream writes atomically once this fails


def test_the_chief_timeout_is_the_one_keras_tuner_waits(monkeypatch):
    monkeypatch.setattr(oracle_client, "TIMEOUT", oracle_client.TIMEOUT)
    assert oracle_client.TIMEOUT == 60 * 60  # keras-tuner's hour; a change upstream needs a look here
    fixes.set_chief_timeout(5)
    assert oracle_client.TIMEOUT == 5
    source = inspect.getsource(fixes.STOCK_ORACLE_CLIENT)  # (install() puts TokenOracleClient in its place)
    assert source.count("timeout=TIMEOUT") >= 7  # every call to the chief reads the module constant


@pytest.mark.parametrize(
    ("cls", "members"),
    [
        (
            kt.oracles.BayesianOptimizationOracle,
            ["_tried_so_far", "_compute_values_hash", "_random_populate_space", "_duplicate", "_vectorize_trials"]
            + ["_nonfixed_space", "gpr", "beta", "num_initial_points", "hyperparameters"],
        ),
        (kt.oracles.GridSearchOracle, ["_ordered_ids", "_populate_next", "_compare"]),
    ],
)
def test_the_private_members_the_fixes_use_still_exist(cls, members):
    oracle = cls(objective=kt.Objective("score", "max"), max_trials=2, hyperparameters=space())
    assert [m for m in members if not hasattr(oracle, m)] == []
    assert hasattr(kt_gridsearch, "LinkedList")


def test_the_private_tuner_hooks_search_tuner_overrides_still_exist():
    """search/tuner.py overrides _populate_initial_space (keras-tuner names it for declaring a space
    without building) and asks _is_worker; a rename upstream would silently skip the override."""
    assert [m for m in ("_populate_initial_space", "_is_worker") if not hasattr(kt.Tuner, m)] == []
    from keras_tuner.src.engine import base_tuner

    assert "self._populate_initial_space()" in inspect.getsource(base_tuner.BaseTuner.__init__)
