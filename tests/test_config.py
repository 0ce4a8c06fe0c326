from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fashion_exp.config import CONFIG_DIR, load_config
from fashion_exp.errors import ConfigError


def test_defaults_cover_the_course_grid():
    config = load_config([])
    assert config.search["learning_rate"].values == [0.0001, 0.001, 0.01, 0.1]
    assert set(config.search["size_inner"].values) >= {10, 100, 1000}
    assert config.search["droprate"].values == [0.0, 0.2, 0.5, 0.8]
    assert "none" in config.search["augmentation"].values and len(config.search["augmentation"].values) >= 2
    assert config.tuner.max_trials >= 20 and config.tuner.epochs == 10
    assert config.tracking.uri.startswith("sqlite:///mlflow.db") or "MLFLOW_TRACKING_URI" in __import__("os").environ


@pytest.mark.parametrize(
    "group,option",
    [
        (g.name, f.stem)
        for g in sorted(CONFIG_DIR.iterdir())
        if g.is_dir() and g.name != "augmentation"
        for f in sorted(g.glob("*.yaml"))
    ],
)
def test_every_group_option_composes(group, option):
    config = load_config([f"{group}={option}"])
    if group == "tuner":
        assert config.tuner.type == option


def test_all_augmentation_policies_load_together():
    names = sorted(f.stem for f in (CONFIG_DIR / "augmentation").glob("*.yaml"))
    config = load_config([f"augmentation=[{','.join(names)}]"])
    assert sorted(config.augmentation) == names


def test_environment_variables_set_data_and_weights(monkeypatch):
    monkeypatch.setenv("FASHION_DATA", "/somewhere/data")
    monkeypatch.setenv("FASHION_WEIGHTS", "/somewhere/x.weights.h5")
    config = load_config([])
    assert config.data.root == "/somewhere/data"
    assert config.model.weights == "/somewhere/x.weights.h5"


@pytest.mark.parametrize(
    "override,key",
    [
        ("search.learning_rate.values=[]", "search.learning_rate.values"),
        ("search.learning_rate.values=[-0.1,0.01]", "search.learning_rate.values"),
        ("search.size_inner.values=[10,2.5]", "search.size_inner.values"),
        ("search.droprate.values=[0.2,1.5]", "search.droprate.values"),
        ("search.augmentation.values=[none,sparkles]", "search.augmentation.values"),
        ("search.augmentation.values=[]", "search.augmentation.values"),
        ("search.learning_rate.type=gaussian", "search.learning_rate.type"),
        ("search=continuous search.droprate.min=0.6 search.droprate.max=0.1", "search.droprate"),
        ("search=continuous search.learning_rate.min=-1", "search.learning_rate"),
        ("search=continuous search.size_inner.step=-5", "search.size_inner.step"),
        ("search=continuous tuner=grid", "search.learning_rate.step"),
        ("tuner.type=annealing", "tuner.type"),
        ("tuner.max_trials=0", "tuner.max_trials"),
        ("data.image_size=32", "data.image_size"),
        ("model.backbone=resnet", "model.backbone"),
        ("model.runtime=tflite", "model.runtime"),
        ("augmentation.shear_zoom_flip.views=0", "augmentation.shear_zoom_flip.views"),
        ("final.restarts=0", "final.restarts"),
        ("final.patience=0", "final.patience"),
        ("final.patience=soon", "final.patience"),
        ("data.download_timeout_s=0", "data.download_timeout_s"),
        ("model.race_batches=0", "model.race_batches"),
        ("model.int8_calibration_photos=0", "model.int8_calibration_photos"),
        ("model.int8_min_cosine=1.5", "model.int8_min_cosine"),
        ("model.int8_min_cosine=0", "model.int8_min_cosine"),
        ("tuner.oracle_threads=0", "tuner.oracle_threads"),
        ("final.selection_rounds=0", "final.selection_rounds"),
        ("preset=best finetune_stage.min_stage1_trials=0", "finetune_stage.min_stage1_trials"),
        ("preset=best finetune_stage.runner_up_gain=1.5", "finetune_stage.runner_up_gain"),
        ("preset=best finetune_stage.prior_rates.avx2.extract_per_s=0", "prior_rates.avx2.extract_per_s"),
        ("preset=best ~finetune_stage.prior_rates.gpu", "finetune_stage.prior_rates.gpu"),
        ("preset=best +finetune_stage.prior_rates.avx2.speed=3", "finetune_stage.prior_rates.avx2.speed"),
        ("serve.max_decoders=0", "serve.max_decoders"),
        ("serve.small_share=1", "serve.small_share"),
        ("serve.keep_alive_s=0", "serve.keep_alive_s"),
        ("final.ensemble=6", "final.ensemble"),
        ("final.ensemble=0", "final.ensemble"),
        ("final.ensemble=most", "final.ensemble"),
        ("final.ensemble=true", "final.ensemble"),
        ("final.hp.droprate=1.5", "final.hp.droprate"),
        ("final.hp.augmentation=sparkles", "final.hp.augmentation"),
        ("+final.hp.momentum=0.9", "final.hp.momentum"),
        ("tuner.objective=accuracy", "tuner.objective"),
        ("tuner.max_consecutive_failed_trials=0", "tuner.max_consecutive_failed_trials"),
        ("model.auto_min_cosine=-0.5", "model.auto_min_cosine"),
        ("model.auto_accuracy_margin=0", "model.auto_accuracy_margin"),
        ("model.auto_max_changed=1.5", "model.auto_max_changed"),
        ("model.auto_confidence=1", "model.auto_confidence"),
        ("model.auto_check_photos=1", "model.auto_check_photos"),
        ("model.cpu_features=avx512bf16", "model.cpu_features"),
        ("model.cpu_features=[avx2,amx]", "model.cpu_features"),
        ("model.cpu_features=[]", "model.cpu_features"),
        ("model.train_precision=half", "model.train_precision"),
        ("final.int8_tolerance=1.5", "final.int8_tolerance"),
        ("serve.request_timeout_s=0", "serve.request_timeout_s"),
        ("tuner.validation_batch_size=0", "tuner.validation_batch_size"),
        ("tuner=hyperband tuner.factor=1", "tuner.factor"),
        ("tuner.workers=-1", "tuner.workers"),
        ("tuner.role=boss", "tuner.role"),
        ("tuner.oracle_address=8470", "tuner.oracle_address"),
        ("tuner.oracle_address=host:99999", "tuner.oracle_address"),
        ("tuner.chief_timeout=0", "tuner.chief_timeout"),
        ("tuner.worker_restarts=-1", "tuner.worker_restarts"),
        ("tuner.gpus_per_worker=-2", "tuner.gpus_per_worker"),
        ("tuner.folds=1", "tuner.folds"),
        ("tuner.folds=-3", "tuner.folds"),
        ("tuner=hyperband tuner.folds=5", "tuner.folds"),
        ("data.interpolation=cubic", "data.interpolation"),
        ("data.scan_size=0", "data.scan_size"),
        ("data.max_image_pixels=0", "data.max_image_pixels"),
        ("predict.top_k=0", "predict.top_k"),
        ("serve.backend=tflite", "serve.backend"),
        ("predict.backend=tflite", "predict.backend"),
        ("serve.port=70000", "serve.port"),
        ("serve.max_batch=0", "serve.max_batch"),
        ("serve.max_wait_ms=-1", "serve.max_wait_ms"),
        ("search.augmentation.type=float", "search.augmentation.type"),
        ("~search.droprate", "search.droprate"),
        ("+search.momentum={type:choice,values:[0.9]}", "search.momentum"),
        ("search.learning_rate.values=[inf]", "search.learning_rate.values"),
        ("search=finetune search.blocks.values=[0,3]", "search.blocks.values"),
        ("search=finetune search.blocks.values=[1.5]", "search.blocks.values"),
        ("search=finetune search.block_lr.values=[0]", "search.block_lr.values"),
        ("model=tiny search=finetune search.blocks.values=[1,3]", "search.blocks"),
        ("search=finetune tuner.folds=5", "tuner.folds"),
        ("model=tiny final.hp.blocks=3", "final.hp.blocks"),
        ("final.hp.block_lr=-1", "final.hp.block_lr"),
        ("tuner.max_minutes=0", "tuner.max_minutes"),
        ("tuner.max_minutes=-5", "tuner.max_minutes"),
        ("serve.max_image_pixels=0", "serve.max_image_pixels"),
        ("serve.decoders=0", "serve.decoders"),
        ("serve.max_waiting=-1", "serve.max_waiting"),
        ("serve.max_connections=0", "serve.max_connections"),
        ("serve.read_timeout_s=0", "serve.read_timeout_s"),
        ("final.members=0", "final.members"),
        ("final.members=2", "final.members"),
        ("final.ensemble=median", "final.ensemble"),
        ("preset=best finetune_stage.blocks=[0]", "finetune_stage.blocks"),
        ("preset=best finetune_stage.blocks=[]", "finetune_stage.blocks"),
        ("preset=best finetune_stage.block_lr=[0]", "finetune_stage.block_lr"),
        ("preset=best finetune_stage.augmentation=[sepia]", "finetune_stage.augmentation"),
        ("preset=best finetune_stage.views=0", "finetune_stage.views"),
        ("preset=best finetune_stage.stage1_share=1.5", "finetune_stage.stage1_share"),
        ("preset=best finetune_stage.patience=0", "finetune_stage.patience"),
        ("preset=best finetune_stage.image_size=40", "finetune_stage.image_size"),
        ("preset=best finetune_stage.ladder_gain.depth=1", "finetune_stage.ladder_gain"),
        ("preset=best finetune_stage.ladder_gain.blocks=-1", "finetune_stage.ladder_gain.blocks"),
        ("preset=best finetune_stage.ladder_reserve=1", "finetune_stage.ladder_reserve"),
        ("preset=best finetune_stage.ladder_bounds.block_lr=[1,0.1]", "finetune_stage.ladder_bounds.block_lr"),
        ("preset=best finetune_stage.probe_photos=1", "finetune_stage.probe_photos"),
        ("preset=best finetune_stage.max_blocks=0", "finetune_stage.max_blocks"),
        ("serve.decode_budget_mb=0", "serve.decode_budget_mb"),
        ("serve.header_timeout_s=0", "serve.header_timeout_s"),
        ("serve.max_requests=0", "serve.max_requests"),
        ("tuner.patience=0", "tuner.patience"),
    ],
)
def test_invalid_values_are_rejected_naming_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config(override.split())
    message = str(err.value)
    assert key in message
    assert "\n" not in message


def test_a_stage_that_does_not_run_does_not_rule_the_config():
    """A search of plain photos alone (augmentation=[none]): finetune_stage names shear_zoom_flip,
    but it is off in the default preset, so nothing is refused (issue 37, item 11); with
    preset=best it runs, and the same setting is a one-line error."""
    plain = ["augmentation=[none]", "search.augmentation.values=[none]"]
    assert load_config(plain).search["augmentation"].values == ["none"]
    with pytest.raises(ConfigError, match="finetune_stage.augmentation: unknown augmentation policy 'shear_zoom_flip'"):
        load_config([*plain, "preset=best"])


@pytest.mark.parametrize(
    "override,needle",
    [
        ("tuner=nonexistent", "tuner=nonexistent: no such tuner option"),
        ("data.imgsize=3", "imgsize"),
        ("data.image_size=big", "data.image_size"),
        ("tuner.epochs=[1,2", "tuner.epochs"),
        ("preset=nonexistent", "preset=nonexistent"),
        ("final.reuse=maybe", "config key 'final.reuse': Value 'maybe' is not a valid bool"),
        ("final.hp.ema=1.5", "final.hp.ema: 1.5 is not a momentum in [0, 1)"),
        ("final.hp.label_smoothing=-0.1", "final.hp.label_smoothing: -0.1 is not a number in [0, 1)"),
    ],
)
def test_bad_overrides_give_one_line(override, needle):
    with pytest.raises(ConfigError) as err:
        load_config([override])
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_dir(tmp_path: Path):
    with pytest.raises(ConfigError, match="no config.yaml"):
        load_config([], config_dir=tmp_path)


def test_every_head_hyperparameter_has_a_final_override_key_and_a_space():
    from fashion_exp.hyperparameters import NAMES

    config = load_config([])
    assert list(config.final.hp) == list(NAMES) and all(v is None for v in config.final.hp.values())
    off = ["ema", "label_smoothing"]  # (levers no search file names: off unless a space or final.hp gives them)
    assert list(load_config(["search=finetune"]).search) == [name for name in NAMES if name not in off]
    levers = load_config([f"+search.{name}={{type:choice,values:[0.0,0.1]}}" for name in off]).search
    assert [levers[name].values for name in off] == [[0.0, 0.1], [0.0, 0.1]]
    assert load_config(["final.hp.size_inner=10"]).final.hp["size_inner"] == 10


def test_val_loss_is_an_objective_that_is_minimised():
    config = load_config(["tuner.objective=val_loss"])
    assert config.tuner.objective == "val_loss" and config.tuner.direction == "min"
    assert load_config([]).tuner.direction == "max"


def defaults_in_code(section: type) -> list[str]:
    """The fields of a dataclass that carry a default (a value, or a factory) of their own."""
    import dataclasses

    return [
        f.name
        for f in dataclasses.fields(section)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    ]


def settings_classes() -> list[type]:
    """Every dataclass of the config schema, and the settings made from it (serve's)."""
    import dataclasses
    import inspect

    from fashion_exp import config as schema
    from fashion_exp.serving.app import ServeSettings

    found = [
        cls
        for _, cls in inspect.getmembers(schema, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__ == schema.__name__
    ]
    return [*found, ServeSettings]


def test_the_default_finder_finds_defaults():
    import dataclasses

    @dataclasses.dataclass
    class Sample:
        plain: int
        folds: int = 0
        hp: dict = dataclasses.field(default_factory=dict)

    assert defaults_in_code(Sample) == ["folds", "hp"]


def test_schema_holds_no_defaults_of_its_own():
    """conf/ is the one home of defaults: a key missing from the YAML is an error, not a silent default."""
    from fashion_exp import config as schema

    sections = settings_classes()
    assert {schema.TunerConfig, schema.FinalConfig, schema.ServeConfig, schema.Config} <= set(sections)
    for section in sections:
        given = defaults_in_code(section)
        assert given == [], f"{section.__name__} defaults {given}: put them in conf/"
    with pytest.raises(ConfigError, match="data.scan_size"):
        load_config(["~data.scan_size"])
    with pytest.raises(ConfigError, match="tuner.folds"):
        load_config(["~tuner.folds"])


def test_where_trials_run_is_not_part_of_the_search_id():
    """A search started on workers resumes in one process (and back): placement keys are left out."""
    from fashion_exp.search.run import search_id

    single = load_config([])
    spread = load_config(["tuner.workers=3", "tuner.role=chief", "tuner.oracle_address=0.0.0.0:8470"])
    assert search_id(single, "d", "w") == search_id(spread, "d", "w")
    assert search_id(single, "d", "w") != search_id(load_config(["tuner.epochs=5"]), "d", "w")


def test_a_command_takes_the_photos_and_backbone_of_the_run_it_starts_from_unless_told(tmp_path):
    """fashion_exp/inputs.py: the search's (or model's) data folder, backbone and weights, unless the
    command line or FASHION_DATA / FASHION_WEIGHTS names them, and never a path missing here."""
    from fashion_exp.inputs import inherited

    data, weights = tmp_path / "photos", tmp_path / "xception.weights.h5"
    data.mkdir()
    weights.write_bytes(b"weights")
    recorded = {"data": {"root": str(data)}, "model": {"backbone": "xception", "weights": str(weights)}}
    current = {"data.root": "data/clothing-dataset-small", "model.backbone": "xception", "model.weights": "imagenet"}
    both = [f"data.root={data}", f"model.weights={weights}"]
    assert inherited(recorded, current, [], environ={}) == both  # (the backbone is already the same)
    assert inherited(recorded, current, ["data.root=elsewhere"], environ={}) == both[1:]
    assert inherited(recorded, current, ["model=tiny"], environ={}) == both[:1]
    assert inherited(recorded, current, [], environ={"FASHION_DATA": "x", "FASHION_WEIGHTS": "y"}) == []
    assert inherited(recorded, current, [], keys=("data.root",), environ={}) == both[:1]
    elsewhere = {"data": {"root": str(tmp_path / "another-machine")}, "model": {"weights": "/nowhere/x.h5"}}
    assert inherited(elsewhere, current, [], environ={}) == []  # the config's defaults apply
    assert inherited({}, current, [], environ={}) == []  # a run from before config.yaml was logged


COMPOSED_THE_SAME = [
    [],
    ["model=tiny", "data.image_size=32", "tuner.epochs=3", "model=xception"],
    ["tuner.epochs=3", "experiment=cv_search"],
    ["augmentation=[none]", "search.augmentation.values=[none]", "search.learning_rate.values=[0.001,0.01]"],
    ["preset=best", "finetune_stage.blocks=[1]", "data={root:/photos}"],
    ["++tuner.epochs=4", "~tuner.patience", "+tuner.extra=1"],
    ["tuner.epochs=1,2"],
    ["model.weightz=3"],
    ["tuner=nonexistent", "tuner.epochs=2"],
    ["tuner.epochs=3", "+tuner.epochs=4"],
    ["search.size_inner.values.x=1"],  # (OmegaConf raises ValueError setting it on the kept copy)
]


@pytest.mark.parametrize("overrides", COMPOSED_THE_SAME, ids=" ".join)
def test_a_kept_composition_gives_what_hydra_composes(overrides):
    """compose() sets plain key=value overrides on a kept composition of the config groups: the
    config, or the one-line error, is what Hydra's whole composition of the same overrides gives."""
    from fashion_exp import config

    def composed(compose):
        try:
            return OmegaConf.to_container(compose())
        except ConfigError as err:
            return str(err)

    kept = composed(lambda: config.compose(overrides, CONFIG_DIR))  # (first: it registers the generated nodes)
    whole = [config._added_group(override) for override in overrides]
    assert kept == composed(lambda: config._hydra_compose(CONFIG_DIR.resolve(), whole))


def test_hydra_composes_the_groups_once_and_again_when_a_file_changes(tmp_path, monkeypatch):
    """Commands and tests load the config many times in one process: Hydra composes each set of
    group choices once (about 0.1 s, every YAML file parsed), until a file of conf/ changes."""
    import shutil

    from fashion_exp import config

    conf = shutil.copytree(CONFIG_DIR, tmp_path / "conf")
    calls = []
    whole = config._hydra_compose
    monkeypatch.setattr(config, "_hydra_compose", lambda *args: calls.append(args[1]) or whole(*args))
    assert load_config(["tuner.epochs=3"], conf).tuner.epochs == 3
    assert load_config(["tuner.epochs=4", "tuner.batch_size=8"], conf).tuner.epochs == 4
    assert load_config(["model=tiny", "tuner.epochs=5"], conf).model.backbone == "tiny"
    assert calls == [(), ("model=tiny",)]
    tuner = conf / "tuner" / "random.yaml"
    tuner.write_text(tuner.read_text().replace("patience:", "patience: 7 #"))
    assert load_config(["tuner.epochs=3"], conf).tuner.patience == 7
    assert len(calls) == 3
