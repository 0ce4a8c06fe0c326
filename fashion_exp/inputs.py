"""Where a command's photos and backbone come from when neither the command line nor the
environment says: the run it starts from.

`make tune` points the search at ../shared's data and weights through FASHION_DATA and
FASHION_WEIGHTS, which a later `python -m fashion_exp train-final` outside make does not have, so
it would look for the photos in the default folder. train-final takes the data folder, the
backbone and its weights of the search it trains from; evaluate, combine and export-onnx take the
data folder of the model they load (its train-final run's). A key given on the command line
(`data.root=...`, `model=...`, `model.weights=...`) or through its environment variable wins, and
a folder or file the run recorded that does not exist here (another machine's) is left to the
config's default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# config key -> (its environment variable, the command-line words that set it)
INHERITED = {
    "data.root": ("FASHION_DATA", ("data.root=",)),
    "model.backbone": (None, ("model=", "model.backbone=")),
    "model.weights": ("FASHION_WEIGHTS", ("model=", "model.weights=")),
}
DATA_ONLY = ("data.root",)  # what a command that loads a model (with its own backbone) takes


def inherited(
    recorded: dict,
    current: Mapping[str, str],
    overrides: list[str],
    keys=tuple(INHERITED),
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """key=value words for each of `keys` that the run's config (`recorded`, its config.yaml)
    holds with another value than `current` (flattened strings), unless the user set it."""
    words = []
    for key in keys:
        variable, setters = INHERITED[key]
        if (variable and environ.get(variable)) or any(word.startswith(setters) for word in overrides):
            continue
        value = _get(recorded, key)
        if value in (None, "") or str(value) == current.get(key) or not _here(key, str(value)):
            continue
        words.append(f"{key}={value}")
    return words


def _get(recorded: dict, key: str):
    node = recorded
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _here(key: str, value: str) -> bool:
    """Whether a recorded path exists on this machine (names such as imagenet or tiny always do)."""
    if key == "data.root":
        return Path(value).is_dir()
    if key == "model.weights" and value != "imagenet":
        return Path(value).expanduser().is_file()
    return True
