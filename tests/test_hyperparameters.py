"""The table of head hyperparameters and what is derived from it."""

import keras_tuner as kt
import pytest

from fashion_exp.config import load_config
from fashion_exp.errors import ConfigError
from fashion_exp.hyperparameters import NAMES, HeadParams, ParamSpace, candidates, define_all, describe
from fashion_exp.search.hypermodel import SpaceModel
from fashion_exp.search.observers import trial_params
from fashion_exp.search.run import trials_csv
from fashion_exp.search.tuner import make_tuner

# the fine-tuning space cut down to the rows that matter here: blocks {0, 1} x block_lr {0.01, 0.1}
BLOCKS_SPACE = [
    "search=finetune",
    "search.learning_rate.values=[0.001]",
    "search.size_inner.values=[10]",
    "search.droprate.values=[0.2]",
    "search.augmentation.values=[none]",
    "search.blocks.values=[0,1]",
    "search.block_lr.values=[0.01,0.1]",
]


def test_values_from_mlflow_strings_are_cast_by_the_table():
    stored = {"learning_rate": "0.001", "size_inner": "100.0", "droprate": "0.2", "augmentation": "none"}
    params = HeadParams.from_values({**stored, "tuner/epochs": 4})  # keras-tuner's own keys are ignored
    assert params == HeadParams(learning_rate=0.001, size_inner=100, droprate=0.2, augmentation="none")
    assert type(params.size_inner) is int and type(params.learning_rate) is float
    assert list(params.as_dict()) == list(NAMES)
    with pytest.raises(KeyError, match="droprate"):
        HeadParams.from_values({k: v for k, v in stored.items() if k != "droprate"})


def test_keras_tuner_space_is_declared_in_table_order_with_the_tables_types():
    config = load_config(["search=finetune"])
    hp = kt.HyperParameters()
    params = define_all(hp, config.search)
    named = [name for name in NAMES if name in config.search]  # (ema, label_smoothing: at their defaults)
    assert [p.name for p in hp.space] == named and len(named) == 6
    assert isinstance(params, HeadParams) and params.augmentation in config.augmentation
    ordered = {p.name: p.ordered for p in hp.space}
    assert ordered["augmentation"] is False and ordered["learning_rate"] is True
    assert list(describe(config.search)) == named


def test_rows_with_a_default_may_be_left_out_and_keep_todays_behaviour():
    """The default space has no fine-tuning rows: its search id, trials and MLflow values read as
    before they existed (blocks 0: a frozen backbone)."""
    config = load_config([])
    assert "blocks" not in config.search and list(describe(config.search)) == list(NAMES[:4])
    hp = kt.HyperParameters()
    assert define_all(hp, config.search).blocks == 0 and "blocks" not in hp.values
    old = HeadParams.from_values({"learning_rate": "0.01", "size_inner": "10", "droprate": "0", "augmentation": "none"})
    assert (old.blocks, old.block_lr) == (0, 0.1)
    assert candidates(config.search, "blocks") == [0]
    assert candidates(load_config(["search=finetune"]).search, "blocks") == [0, 1, 2]
    assert candidates({"blocks": ParamSpace("int", min=1, max=2)}, "blocks") == [1, 2]


def test_trials_table_columns_come_from_the_table():
    header = trials_csv([], {}, "val_loss").splitlines()[0].split(",")
    assert header == ["trial_id", "status", "val_loss", "best_epoch", *NAMES, "run_id"]


def test_a_broken_value_names_its_key():
    params = HeadParams(learning_rate=0.01, size_inner=10, droprate=1.2, augmentation="none")
    with pytest.raises(ConfigError, match=r"^final\.hp\.droprate: 1\.2 is not a number in \[0, 1\)$"):
        params.check("final.hp", {"augmentation": ["none"]})
    with pytest.raises(ConfigError, match="unknown augmentation 'none'"):
        HeadParams(0.01, 10, 0.2, "none").check("final.hp", {"augmentation": ["shear_zoom_flip"]})


@pytest.mark.parametrize("tuner", ["grid", "bayesian", "random"])
def test_block_lr_is_searched_only_where_blocks_train(tmp_path, tuner):
    """blocks {0, 1} x block_lr {0.01, 0.1} is three heads, not four: a frozen backbone has no block
    learning rate, so every tuner proposes blocks=0 once (without block_lr) and then stops. (The
    Bayesian oracle's own enumeration of a discrete space is used after its one random point.)"""
    bayesian = ["tuner.initial_points=1"] if tuner == "bayesian" else []
    config = load_config([*BLOCKS_SPACE, f"tuner={tuner}", "tuner.max_trials=10", *bayesian])
    oracle = make_tuner(config.tuner, SpaceModel(config.search), tmp_path, "p", 1, True, observers=[]).oracle
    proposed = []
    for step in range(6):
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            break
        proposed.append(dict(trial.hyperparameters.values))
        oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5 + 0.01 * step})
        oracle.end_trial(trial)
    heads = sorted((values["blocks"], values.get("block_lr")) for values in proposed)
    assert heads == [(0, None), (1, 0.01), (1, 0.1)]
    frozen = next(trial for trial in oracle.trials.values() if trial.hyperparameters.values["blocks"] == 0)
    assert "block_lr" not in trial_params(frozen)  # MLflow and trials.csv show no value that did nothing
    assert HeadParams.from_values(frozen.hyperparameters.values).block_lr == 0.1  # the head holds the default


def test_a_conditional_row_is_declared_only_where_it_can_differ():
    """block_lr is conditional when the space has frozen and fine-tuned heads, plain when every head
    fine-tunes, undeclared when none does; the search id (describe) changes only where it is
    conditional, so a default search resumes as before."""
    spaces = {
        "mixed": load_config(BLOCKS_SPACE).search,
        "all fine-tuned": load_config([*BLOCKS_SPACE, "search.blocks.values=[1,2]"]).search,
        "all frozen": load_config([*BLOCKS_SPACE, "search.blocks.values=[0]"]).search,
    }
    declared = {}
    for name, search in spaces.items():
        hp = kt.HyperParameters()
        define_all(hp, search)
        declared[name] = [(p.name, [c.get_config() for c in p.conditions]) for p in hp.space if p.name == "block_lr"]
    assert declared == {
        "mixed": [("block_lr", [{"name": "blocks", "values": [1]}])],
        "all fine-tuned": [("block_lr", [])],
        "all frozen": [],
    }
    assert describe(spaces["mixed"])["block_lr"]["active_if"] == "blocks > 0"
    assert "active_if" not in describe(spaces["all fine-tuned"])["block_lr"]
    assert all("active_if" not in entry for entry in describe(load_config([]).search).values())
    assert HeadParams(0.1, 10, 0.2, "none", blocks=0).active() == {
        "learning_rate": 0.1,
        "size_inner": 10,
        "droprate": 0.2,
        "augmentation": "none",
        "blocks": 0,
        "ema": 0.0,
        "label_smoothing": 0.0,
    }
    assert HeadParams(0.1, 10, 0.2, "none", blocks=2, block_lr=0.01).active()["block_lr"] == 0.01


def test_a_conditional_space_crosses_grpc_without_printing(tmp_path, capsys, monkeypatch):
    """keras-tuner 1.4.8 printed a condition's first value whenever it was sent to or from the chief
    (several lines a trial on the chief's terminal); keras_tuner_fixes.install(), which every job
    that searches runs, mends that, and the proto still carries the same condition."""
    from keras_tuner.src.engine import conditions

    from fashion_exp.search import keras_tuner_fixes

    monkeypatch.setattr(conditions.Parent, "to_proto", conditions.Parent.to_proto)  # restored after the test
    keras_tuner_fixes.install()
    config = load_config([*BLOCKS_SPACE, "tuner=grid"])
    space = make_tuner(config.tuner, SpaceModel(config.search), tmp_path, "p", 1, True, observers=[]).oracle.get_space()
    capsys.readouterr()
    proto = space.to_proto()
    assert capsys.readouterr().out == ""
    again = kt.HyperParameters.from_proto(proto)
    block_lr = next(p for p in again.space if p.name == "block_lr")
    assert [c.get_config() for c in block_lr.conditions] == [{"name": "blocks", "values": [1]}]


def test_a_trials_label_says_what_it_tried():
    from fashion_exp.hyperparameters import label

    frozen = {"learning_rate": 0.001, "size_inner": 100, "droprate": 0.2, "augmentation": "none", "blocks": 0}
    assert label({**frozen, "block_lr": 0.1}) == "lr=0.001 inner=100 drop=0.2 none"  # no block_lr: nothing trains
    assert label({**frozen, "blocks": 1, "block_lr": 0.1}) == "lr=0.001 inner=100 drop=0.2 none blocks=1 blr=0.1"
    assert label({"learning_rate": 0.0001, "tuner/epochs": 3}) == "lr=0.0001"  # keras-tuner's own keys left out
    assert label({**frozen, "ema": 0.0, "label_smoothing": 0.1}) == "lr=0.001 inner=100 drop=0.2 none smooth=0.1"
