"""A staged tune (preset=best) on workers: each stage and ladder rung is a search of its own, with
settings the chief decides as it goes (stage 1's best head, stage 2's size, a rung's space).

For every search it runs on workers the chief publishes those settings in the shared work_dir,
`tuner/<search id>/search.json`: what makes the search differ from the command line (its space,
the tuner's settings that are not placement, the image size, the augmentation policies, the
seed). A worker applies them to its own config, so its data, weights and work_dir stay its own,
and the search id it computes from them must be the chief's (the same photos and weights).
Local workers are started for one search (`tune-worker --search <id>`). A worker started by hand
on another machine runs the search its command line names (stage 1), then follows the chain the
chief links, `tuner/<id>/next.json` naming the next search (or none: the tune is over), until the
tune ends or no link comes within tuner.chief_timeout.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from fashion_exp import writers
from fashion_exp.config import PLACEMENT_KEYS, AugmentationPolicy, Config
from fashion_exp.errors import UserError
from fashion_exp.hyperparameters import ParamSpace
from fashion_exp.screen import say

SETTINGS = "search.json"
NEXT = "next.json"
POLL_SECONDS = 0.5


def _folder(work_dir: Path | str, sid: str) -> Path:
    return Path(work_dir) / "tuner" / sid


def _write(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = writers.temporary(path)
    partial.write_text(json.dumps(value, indent=1, sort_keys=True))
    partial.replace(path)


def settings(config: Config) -> dict:
    """What a search's workers take from the chief rather than from their own command line."""
    return {
        "search": {name: asdict(space) for name, space in config.search.items()},
        "tuner": {k: v for k, v in asdict(config.tuner).items() if k not in PLACEMENT_KEYS},
        "image_size": config.data.image_size,
        "augmentation": {name: asdict(policy) for name, policy in config.augmentation.items()},
        "seed": config.seed,
    }


def publish(config: Config, sid: str) -> None:
    """Keep the settings of search `sid` where its workers read them; what follows it is not
    decided yet (a link left by an earlier run of the tune is removed)."""
    _write(_folder(config.work_dir, sid) / SETTINGS, settings(config))
    (_folder(config.work_dir, sid) / NEXT).unlink(missing_ok=True)


def link(work_dir: Path | str, previous: str, following: str | None) -> None:
    """Say which search comes after `previous` (None: the tune is over)."""
    _write(_folder(work_dir, previous) / NEXT, {"next": following})


def applied(config: Config, work_dir: Path | str, sid: str) -> Config:
    """`config` with search `sid`'s published settings in place of its own; UserError when the
    chief published none there (another work_dir, or not a search of a distributed tune)."""
    path = _folder(work_dir, sid) / SETTINGS
    try:
        saved = json.loads(path.read_text())
        search = {name: ParamSpace(**space) for name, space in saved["search"].items()}
        policies = {name: AugmentationPolicy(**policy) for name, policy in saved["augmentation"].items()}
        tuner = replace(config.tuner, **saved["tuner"])
        data = replace(config.data, image_size=int(saved["image_size"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"search {sid}: no settings from its chief at {path} ({type(err).__name__}: {err})") from None
    return replace(config, search=search, augmentation=policies, tuner=tuner, data=data, seed=int(saved["seed"]))


def next_search(work_dir: Path | str, sid: str, timeout: float) -> str | None:
    """The search the chief linked after `sid`, waiting up to `timeout` seconds for the link; None
    when the tune is over or no link came (said)."""
    path = _folder(work_dir, sid) / NEXT
    ends = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > ends:
            say(f"No search followed {sid} within tuner.chief_timeout={timeout:g} s: stopping")
            return None
        time.sleep(POLL_SECONDS)
    try:
        following = json.loads(path.read_text())["next"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(following) if following else None
