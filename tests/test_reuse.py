"""final.reuse: train-final takes a search trial's checkpoint as a member's first restart only when
the trial trained what train-final would, and only when it scores what its trial logged."""

import tempfile
import types
from dataclasses import replace

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.config import load_config
from fashion_exp.final import reuse
from fashion_exp.tracking.queries import TrialCheckpoint, trial_checkpoint


def recipe_of(config) -> dict:
    """A search's config.yaml as reuse reads it, for a search that trained like `config`'s train-final."""
    augmentation = {name: dict(vars(policy)) for name, policy in config.augmentation.items()}
    tuner = {"epochs": config.final.epochs, "patience": config.final.patience, "folds": 0}
    tuner.update({"batch_size": config.tuner.batch_size, "objective": config.tuner.objective})
    data = {"image_size": config.final.image_size, "interpolation": config.data.interpolation}
    return {"seed": config.seed, "data": data, "tuner": tuner, "augmentation": augmentation}


def test_a_trial_trained_otherwise_is_not_reused_and_the_difference_is_named():
    config = load_config(["model=tiny", "preset=best", "final.views=2"])
    policy = config.augmentation["shear_zoom_flip"]
    final = reuse.final_recipe(config, policy)
    search = recipe_of(config)
    assert reuse.differences(reuse.search_recipe(search, "shear_zoom_flip"), final) == []
    search["tuner"]["epochs"], search["tuner"]["folds"] = 3, 5  # a cross-validated stage-1 search, say
    said = reuse.differences(reuse.search_recipe(search, "shear_zoom_flip"), final)
    assert said == ["epochs 3 (train-final: 8)", "folds 5 (train-final: 0)"]


def test_an_identity_policys_views_are_one_photo_whatever_they_say():
    config = load_config(["model=tiny", "preset=best", "final.views=2"])  # final.views applies to none too
    search = recipe_of(config)
    for name in ("none", "shear_zoom_flip"):
        search["augmentation"][name]["views"] = 1  # as stage 2 trained them with finetune_stage.views=1
    two_views = {name: replace(config.augmentation[name], views=2) for name in ("none", "shear_zoom_flip")}
    plain = reuse.final_recipe(config, two_views["none"])
    assert reuse.differences(reuse.search_recipe(search, "none"), plain) == []  # one photo's features, twice
    augmented = reuse.final_recipe(config, two_views["shear_zoom_flip"])
    assert reuse.differences(reuse.search_recipe(search, "shear_zoom_flip"), augmented)[0].startswith("policy")


def small_head(path) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A saved 4-class head and validation features and labels to score it on."""
    rng = np.random.default_rng(0)
    head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    head.save(path)
    features = rng.normal(size=(50, 8)).astype("float32")
    return head, features, rng.integers(0, 4, 50)


def test_a_checkpoint_that_does_not_score_its_trial_is_not_reused(tmp_path, said):
    head, val, labels = small_head(tmp_path / "head.keras")
    accuracy = float(np.mean(head.predict(val, verbose=0).argmax(1) == labels))
    features = types.SimpleNamespace(val=val, val_labels=labels, runtime="onnx", blocks=0)
    features.on_runtime = lambda runtime: features if runtime == "onnx" else None
    config = load_config(["model=tiny"])
    history = {"val_accuracy": [accuracy / 2, accuracy], "val_loss": [2.0, 1.0]}
    saved = (tmp_path / "head.keras").read_bytes()
    honest = TrialCheckpoint("run-a", saved, history, accuracy)
    other = TrialCheckpoint("run-b", saved, history, accuracy + 0.1)
    reused = reuse.confirm(config, {0: honest, 1: other}, [features, features])
    assert list(reused) == [0] and reused[0].trial_run_id == "run-a"
    assert reused[0].restart.best_epoch == 1 and reused[0].restart.seed == config.seed
    assert len(said) == 2 and said[1].startswith("Member 2 trains: its trial's checkpoint scores")


@pytest.mark.parametrize("layout", ["epoch_ curves", "before 2026-12-01"])
def test_a_trials_checkpoint_and_curves_are_read_back(tmp_path, store_uri, layout):
    uri = store_uri
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"))
    prefix, score = ("epoch_", "val_accuracy") if layout == "epoch_ curves" else ("", "best_val_accuracy")
    for step, (acc, loss) in enumerate([(0.5, 1.5), (0.75, 1.0), (0.7, 1.1)]):
        client.log_metric(run.info.run_id, f"{prefix}val_accuracy", acc, step=step)
        client.log_metric(run.info.run_id, f"{prefix}val_loss", loss, step=step)
    client.log_metric(run.info.run_id, score, 0.75)
    assert trial_checkpoint(uri, run.info.run_id) is None  # no checkpoint yet (a trial still running)
    small_head(tmp_path / "head.keras")
    client.log_artifact(run.info.run_id, str(tmp_path / "head.keras"), "checkpoint")
    client.set_terminated(run.info.run_id)
    found = trial_checkpoint(uri, run.info.run_id)
    assert found.val_accuracy == 0.75 and found.history["val_accuracy"] == [0.5, 0.75, 0.7]
    assert reuse.as_restart(found, 42, "val_accuracy").best_epoch == 1


def identity_onnx(path):
    """A one-node ONNX file (uint8 (n, 2) in, the same out) at `path`."""
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(name, TensorProto.UINT8, [None, 2]) for name in ("images", "out")]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "identity", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_reading_a_runs_files_leaves_no_copies_in_the_temporary_folder(tmp_path, store_uri, monkeypatch):
    """MLflow 3.17's download without a destination copies a run's file into a new folder in the
    temporary folder, on every store (the default sqlite one too), and leaves it there: each
    train-final left the search's config.yaml and trials.csv and each reused head, each `serve` of
    an ONNX model a copy of its file (80 MB for Xception). (A tracking server: test_distributed.py.)"""
    from fashion_exp.final.onnx_export import ONNX_ARTIFACT, onnx_predictor
    from fashion_exp.tracking.queries import run_config
    from fashion_exp.tracking.registry import LoadedModel

    client = MlflowClient(store_uri)
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_text(run, "seed: 7\n", "config.yaml")
    for step, accuracy in enumerate([0.5, 0.75]):
        client.log_metric(run, "epoch_val_accuracy", accuracy, step=step)
    client.log_metric(run, "val_accuracy", 0.75)
    small_head(tmp_path / "head.keras")
    client.log_artifact(run, str(tmp_path / "head.keras"), "checkpoint")
    client.log_artifact(run, str(identity_onnx(tmp_path / "model.onnx")), ONNX_ARTIFACT.rsplit("/", 1)[0])
    client.set_terminated(run)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config, found = run_config(store_uri, run), trial_checkpoint(store_uri, run)
    predictor = onnx_predictor(LoadedModel(None, f"runs:/{run}", ["a", "b"], 1, "bilinear", run), store_uri)
    assert sorted(path.name for path in scratch.iterdir()) == []
    assert config == {"seed": 7} and predictor.predict(np.ones((1, 2))).tolist() == [[1, 1]]
    assert reuse.load_checkpoint(found.head).output_shape == (None, 4)


@pytest.mark.parametrize("runtime", ["", "+openvino-bf16-k1f2", "+onnx-int8-a1b2"])
def test_a_searchs_first_cut_and_its_other_cuts_name_one_weights_file(runtime):
    """A search over blocks 1 and 2 tags its first cut's fingerprint; its two-block trials read
    another cut of the same weights, on any runtime (whose name follows the cut's)."""
    assert reuse.same_weights(f"xception-ab12-cut1{runtime}", f"xception-ab12-cut2{runtime}")
    assert not reuse.same_weights(f"xception-ab12-cut1{runtime}", f"xception-cd34-cut2{runtime}")
    assert not reuse.same_weights(None, f"xception-ab12-cut2{runtime}")
