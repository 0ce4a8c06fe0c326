"""The table of head hyperparameters and what is derived from it."""

import keras_tuner as kt
import pytest

from fashion_exp.config import load_config
from fashion_exp.errors import ConfigError
from fashion_exp.hyperparameters import NAMES, HeadParams, ParamSpace, candidates, define_all, describe
from fashion_exp.search.run import trials_csv


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
    assert [p.name for p in hp.space] == list(NAMES)
    assert isinstance(params, HeadParams) and params.augmentation in config.augmentation
    ordered = {p.name: p.ordered for p in hp.space}
    assert ordered["augmentation"] is False and ordered["learning_rate"] is True
    assert list(describe(config.search)) == list(NAMES)


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
