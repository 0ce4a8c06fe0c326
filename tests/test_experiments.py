"""conf/experiment/: every file composes into a valid config with its overrides in effect, and the
results page (docs/results.md) names every experiment and only those."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from fashion_exp.cli import main
from fashion_exp.config import CONFIG_DIR, load_config
from fashion_exp.errors import ConfigError

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
RESULTS = CONFIG_DIR.parent / "docs" / "results.md"


def _leaves(node, prefix: str = "") -> dict:
    """Dotted key -> value for every leaf of a YAML mapping (lists are leaves)."""
    leaves = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            leaves.update(_leaves(value, dotted))
        else:
            leaves[dotted] = value
    return leaves


def _value(config, key: str):
    """A composed config's value at a dotted key, as plain Python (lists as lists)."""
    value = OmegaConf.select(config, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _file(name: str) -> tuple[dict, dict[str, str]]:
    """(the file's leaves, its defaults list's `override /group: option` entries as group -> option)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml"))
    groups = {}
    for entry in raw.pop("defaults", []):
        ((key, option),) = entry.items()
        groups[key.removeprefix("override /")] = option
    return _leaves(raw), groups


def test_there_are_experiments():
    assert EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_overrides_in_effect(name):
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n"), "an experiment's keys are the config's own (root) keys"
    config = load_config([f"+experiment={name}"])
    composed = OmegaConf.structured(config)
    default = OmegaConf.structured(load_config([]))
    leaves, groups = _file(name)
    for key, value in leaves.items():
        assert _value(composed, key) == value, key
    changed = [key for key, value in leaves.items() if _value(default, key) != value]
    if "tuner" in groups:
        assert config.tuner.type == groups["tuner"]
        changed += ["tuner"] if groups["tuner"] != load_config([]).tuner.type else []
    if "search" in groups:
        assert set(config.search) == set(load_config([f"search={groups['search']}"]).search)
        changed += ["search"] if set(config.search) != set(load_config([]).search) else []
    assert changed, f"{name} changes nothing the defaults do not already say"


def test_both_spellings_pick_the_same_experiment():
    name = EXPERIMENTS[0]
    assert OmegaConf.structured(load_config([f"experiment={name}"])) == OmegaConf.structured(
        load_config([f"+experiment={name}"])
    )


def test_the_command_line_wins_over_an_experiment():
    config = load_config(["+experiment=finetune_150", "tuner.epochs=2", "tuner=random"])
    assert config.tuner.epochs == 2
    assert config.tuner.type == "random"
    assert config.search["blocks"].values == [0, 1, 2]  # the rest of the experiment still holds


@pytest.mark.parametrize("spelling", ["+experiment", "experiment"])
def test_a_misspelt_experiment_names_the_options(spelling):
    with pytest.raises(ConfigError) as caught:
        load_config([f"{spelling}=finetune_15"])
    message = str(caught.value)
    assert "\n" not in message
    assert "experiment=finetune_15" in message
    assert all(name in message for name in EXPERIMENTS)


def test_the_cli_answers_a_misspelt_experiment_in_one_line(capsys):
    assert main(["show-config", "+experiment=finetune_15"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: experiment=finetune_15: no such experiment option") and err.count("\n") == 1


def test_the_results_page_names_every_experiment_and_only_those():
    named = set(re.findall(r"\+experiment=([\w-]+)", RESULTS.read_text()))
    assert named == set(EXPERIMENTS)
