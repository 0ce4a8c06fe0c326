"""final.reuse: a member's first restart is the search's trial of it, when that trial already
trained what train-final would.

preset=best's stage 2 fine-tunes at the shipped size (299px when the budget allows) on the
training photos and keeps each trial's best epoch on validation. train-final training the same
configuration from the same seed repeats that trial to the digit (docs/results.md: about 25
minutes of a 2-core CPU for two members). So when the trial's recipe (size, interpolation, seed,
epochs, patience, batch size, objective, views of its policy, training on the training split
alone) and its photos and weights are train-final's, the trial's checkpoint is that restart.
Its validation accuracy is computed again on the trial's own features (the search's runtime: fp32,
or OpenVINO bf16 where auto's check held for the cut, read back from the feature cache): a
checkpoint that does not score what its trial logged is not used. Train-final's forward selection
then scores every head on fp32 features, what the shipped model computes. Anything that differs is
said, in one line, and the member trains as before.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np

from fashion_exp.config import Config
from fashion_exp.final.ensemble import member_probabilities
from fashion_exp.final.restarts import Restart
from fashion_exp.final.selection import score
from fashion_exp.hyperparameters import NAMES, HeadParams
from fashion_exp.screen import say
from fashion_exp.tracking.queries import (
    SearchRecord,
    TrialCheckpoint,
    ranked_trials,
    search_record,
    trial_checkpoint,
)

SAME_SCORE = 1e-6  # a reused head must score its trial's val_accuracy on train-final's features (same photos: exact)


@dataclass
class Reused:
    """A trial's head, standing for restart 0 (seed config.seed) of a member."""

    trial_run_id: str
    head: keras.Model
    restart: Restart


def final_recipe(config: Config, policy) -> dict:
    """How train-final trains a member's restart (policy: its augmentation policy, final.views applied)."""
    return {
        "image_size": config.final.image_size,
        "interpolation": config.data.interpolation,
        "seed": config.seed,
        "epochs": config.final.epochs,
        "patience": config.final.patience,
        "batch_size": config.tuner.batch_size,
        "objective": config.tuner.objective,
        "folds": 0,  # (a cross-validated trial's checkpoint is one fold's head, trained on part of train)
        "policy": trained_views(vars(policy)),
    }


def search_recipe(search: dict, policy_name: str) -> dict:
    """How a search's trials of `policy_name` trained, from its config.yaml."""
    data, tuner = search.get("data") or {}, search.get("tuner") or {}
    return {
        "image_size": data.get("image_size"),
        "interpolation": data.get("interpolation"),
        "seed": search.get("seed"),
        "epochs": tuner.get("epochs"),
        "patience": tuner.get("patience"),
        "batch_size": tuner.get("batch_size"),
        "objective": tuner.get("objective"),
        "folds": tuner.get("folds"),
        "policy": trained_views((search.get("augmentation") or {}).get(policy_name)),
    }


def trained_views(policy: dict | None) -> dict | None:
    """A policy's settings as a head trains on them: an identity policy's views are one photo (its
    K views are the same features), whatever its views say."""
    if policy is None:
        return None
    plain = json.loads(json.dumps(policy))  # (tuples -> lists, as config.yaml holds them)
    identity = not any(plain.get(name) for name in ("rotation", "shift", "shear", "zoom", "horizontal_flip"))
    return {**plain, "views": 1} if identity else plain


def differences(search: dict, final: dict) -> list[str]:
    """'name: the search's value, not train-final's' for every recipe entry that differs."""
    return [
        f"{name} {search.get(name)!r} (train-final: {value!r})"
        for name, value in final.items()
        if search.get(name) != value
    ]


def trial_run(params: HeadParams, rows: list[dict[str, str]]) -> str | None:
    """The run id of the trial (a trials.csv row) that tried exactly `params`, or None."""
    for row in rows:
        values = {name: row[name] for name in NAMES if row.get(name, "") != ""}
        try:
            if HeadParams.from_values(values) == params and row.get("run_id"):
                return row["run_id"]
        except (KeyError, ValueError):
            continue
    return None


def why_not(config: Config, record: SearchRecord, features, policy, params: HeadParams) -> str:
    """Why the search's trial of `params` is not a restart of train-final's ('' when it may be)."""
    if record.tags.get("dataset_fingerprint") != features.dataset.fingerprint():
        return "the search trained on other photos"
    trial_features = features.on_runtime(record.tags.get("features_runtime", features.runtime))
    if trial_features is None or not same_weights(record.tags.get("weights_fingerprint"), trial_features.fingerprint):
        return "the search's backbone weights differ"
    differ = differences(search_recipe(record.config, params.augmentation), final_recipe(config, policy))
    return f"the search trained it otherwise: {'; '.join(differ)}" if differ else ""


def same_weights(searched: str | None, cut: str) -> bool:
    """Whether a search's weights fingerprint (its first cut's: search/run.first_cut) and a cut's
    name one weights file: a search over several blocks values trains each trial on its own cut."""
    return searched is not None and CUT.sub("", searched) == CUT.sub("", cut)


# features/backbone.py: a cut's fingerprint is the weights' and -cut<blocks>; a runtime other than
# TensorFlow's adds +<runtime>-<cpu> after it (features/runtime.py)
CUT = re.compile(r"-cut\d+(?=\+|$)")


def load_checkpoint(head: bytes) -> keras.Model:
    """A trial's head.keras (the file's bytes), in Keras' safe mode (no code from the file runs)."""
    from fashion_exp.head.model import BlockAdam, SmoothedSparseCrossentropy

    objects = {"fashion_exp>BlockAdam": BlockAdam, "fashion_exp>SmoothedSparseCrossentropy": SmoothedSparseCrossentropy}
    with tempfile.TemporaryDirectory(prefix="fashion-exp-head-") as tmp:
        path = Path(tmp, "head.keras")
        path.write_bytes(head)
        return keras.saving.load_model(path, custom_objects=objects, safe_mode=True)


def as_restart(checkpoint: TrialCheckpoint, seed: int, objective: str) -> Restart:
    """The trial's curves as a Restart (its best epoch: the first best by the objective, as ModelCheckpoint keeps)."""
    history = checkpoint.history
    pick = np.argmin if objective == "val_loss" else np.argmax
    best = int(pick(history[objective]))
    return Restart(seed, best, history["val_accuracy"][best], history["val_loss"][best], history)


def candidates(config: Config, sources: list[str], members: list[HeadParams], features: list, policies):
    """member index -> its search trial's checkpoint, for every member whose trial trained what
    train-final would (read from the store: no features are extracted); each other member's
    reason is said. sources[i]: the search run member i came from; features[i]: the features of
    its cut; policies[i]: its augmentation policy, final.views applied."""
    if not config.final.reuse:
        return {}
    uri = config.tracking.uri
    records = {run: search_record(uri, run) for run in dict.fromkeys(sources)}
    trials = {run: ranked_trials(uri, config.tracking.experiment, run)[1] for run in records}
    found = {}
    for index, params in enumerate(members):
        record, rows = records[sources[index]], trials[sources[index]]
        reason = why_not(config, record, features[index], policies[index], params)
        run_id = trial_run(params, rows) if not reason else None
        checkpoint = trial_checkpoint(uri, run_id) if run_id else None
        if checkpoint is not None:
            found[index] = replace(checkpoint, runtime=record.tags.get("features_runtime", ""))
            continue
        if not reason:  # (final.hp.* overrides make a configuration no trial tried)
            reason = "its trial left no checkpoint" if run_id else "no trial of the search tried exactly these values"
        if search_recipe(record.config, "")["image_size"] == config.final.image_size:  # (else nothing to say)
            say(f"Member {index + 1} trains: {reason}")
    return found


def confirm(config: Config, found: dict[int, TrialCheckpoint], features: list) -> dict[int, Reused]:
    """member index -> Reused, for every candidate whose head scores its trial's val_accuracy on
    its trial's validation features (features[i]: member i's cut; a checkpoint that does not is
    said, and its member trains)."""
    reused, by_runtime = {}, {}  # (one Features a cut and runtime: its validation maps are read once)
    for index, checkpoint in found.items():
        head = load_checkpoint(checkpoint.head)
        mine = features[index]
        key = (mine.blocks, checkpoint.runtime or mine.runtime)
        if key not in by_runtime:
            by_runtime[key] = mine.on_runtime(key[1])
        trial_features = by_runtime[key]
        accuracy, _ = score(member_probabilities([head], trial_features.val)[0], mine.val_labels)
        if abs(accuracy - checkpoint.val_accuracy) > SAME_SCORE:
            say(
                f"Member {index + 1} trains: its trial's checkpoint scores {accuracy:.4f} on these features, "
                f"not the {checkpoint.val_accuracy:.4f} its trial logged"
            )
            continue
        reused[index] = Reused(checkpoint.run_id, head, as_restart(checkpoint, config.seed, config.tuner.objective))
        say(
            f"Member {index + 1}: restart 1 is the search's trial run {checkpoint.run_id} (val_accuracy "
            f"{accuracy:.4f} on its {trial_features.runtime} features), not trained again (final.reuse)"
        )
    return reused
