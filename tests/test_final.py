"""train-final, evaluate, promote and predict on synthetic data with the tiny backbone."""

import json
import os
import shutil
from importlib.metadata import version as installed
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from fashion_exp.cli import main
from fashion_exp.config import load_config
from fashion_exp.errors import ConfigError, UserError
from fashion_exp.final.evaluate import confusion_matrix, evaluate, per_class_metrics, score
from fashion_exp.final.train import train_final
from fashion_exp.search.run import run_search
from fashion_exp.tracking import registry
from fashion_exp.tracking.queries import artifact_bytes
from tests.conftest import search_overrides
from tests.synthetic import COLORS, make_dataset, write_image

FINAL = ["final.image_size=32", "final.epochs=4", "final.views=2", "final.restarts=2"]


@pytest.fixture
def final_overrides(overrides):
    return [*overrides, *FINAL]


@pytest.fixture(scope="module")
def tuned_store(tmp_path_factory, mlflow_template):
    """A store holding one finished one-trial search, made once per module (train-final needs a
    search; its runs and best values are all it reads)."""
    folder = tmp_path_factory.mktemp("tuned")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    config = load_config([*search_overrides(folder, make_dataset(folder / "data")), *FINAL, "tuner.max_trials=1"])
    here = os.getcwd()
    os.chdir(folder)  # the search's artifacts (./mlruns) stay in its folder
    try:
        return folder / "mlflow.db", run_search(config)
    finally:
        os.chdir(here)


@pytest.fixture
def tuned(tuned_store, final_overrides, tmp_path):
    """This test's store: a copy of the one with the finished search."""
    store, result = tuned_store
    shutil.copy(store, tmp_path / "mlflow.db")
    return result


def test_metrics_match_a_hand_computed_confusion_matrix():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    matrix = confusion_matrix(y_true, y_pred, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    rows = per_class_metrics(matrix, ["a", "b", "c"])
    assert rows[0] == pytest.approx({"class": "a", "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert rows[1]["precision"] == pytest.approx(1 / 2) and rows[1]["recall"] == pytest.approx(1 / 2)
    assert rows[2]["precision"] == pytest.approx(3 / 4) and rows[2]["recall"] == pytest.approx(3 / 4)
    probabilities = np.eye(3)[y_pred] * 0.9 + 0.1 / 3
    result = score(probabilities, y_true, ["a", "b", "c"])
    assert result.accuracy == pytest.approx(6 / 9)
    expected_loss = -np.mean(np.log(probabilities[np.arange(9), y_true]))
    assert result.loss == pytest.approx(expected_loss)


def test_no_search_yet_is_a_clear_error(final_overrides):
    with pytest.raises(ConfigError, match="no finished tune search"):
        train_final(load_config(final_overrides))


def test_from_run_must_be_a_search(final_overrides, tuned):
    with pytest.raises(ConfigError, match="from_run=nope"):
        train_final(load_config([*final_overrides, "from_run=nope"]))


def test_final_override_is_validated(final_overrides, tuned):
    with pytest.raises(ConfigError, match="final.hp.droprate"):
        train_final(load_config([*final_overrides, "final.hp.droprate=1.5"]))
    with pytest.raises(ConfigError, match="final.hp.augmentation: unknown augmentation 'sparkles'"):
        train_final(load_config([*final_overrides, "final.hp.augmentation=sparkles"]))


def test_a_final_model_the_disk_cannot_hold_is_refused_before_any_work(final_overrides, tuned, monkeypatch):
    monkeypatch.setattr("fashion_exp.features.features.shutil.disk_usage", lambda path: SimpleNamespace(free=1000))
    config = load_config(final_overrides)
    with pytest.raises(UserError) as err:
        train_final(config)
    message = str(err.value)
    assert "the final model's cached features need" in message and message.endswith("or lower final.views")
    assert "\n" not in message and "search.blocks" not in message
    client = MlflowClient(config.tracking.uri)
    finals = client.get_experiment_by_name(config.final.experiment)
    assert finals is None or not client.search_runs([finals.experiment_id])  # no final run started


def test_final_patience_stops_restarts_that_no_longer_improve(final_overrides, tuned, said):
    """final.patience=1 with a learning rate too small to ever beat epoch 0: each restart stops
    after 2 of its 6 epochs, says so, and logs how many epochs it ran."""
    slow = ["final.patience=1", "final.epochs=6", "final.hp.learning_rate=1e-9"]
    result = train_final(load_config([*final_overrides, *slow]))
    restarts = [line for line in said if line.startswith("Restart")]
    assert len(restarts) == 2 and all("2 epochs, best epoch 0," in line for line in restarts)
    client = MlflowClient(load_config(final_overrides).tracking.uri)
    run = client.get_run(result.run_id)
    assert run.data.params["patience"] == "1"
    assert [m.value for m in client.get_metric_history(result.run_id, "restart_epochs")] == [2, 2]


def test_final_train_evaluate_promote_predict(final_overrides, tuned, tmp_path, capsys, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'someone-elses.db'}")  # the global default
    global_uris = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")

    inferred = []  # MLflow's inference of the model's requirements: a subprocess that imports TensorFlow
    monkeypatch.setattr("mlflow.utils.environment._infer_requirements", lambda *args, **kwargs: inferred.append(args))
    config = load_config([*final_overrides, "final.hp.augmentation=shear_zoom_flip"])
    first = train_final(config)
    progress = capsys.readouterr().err  # one bar over 2 restarts x 4 epochs, with the epoch's metrics
    assert "Head epochs: 100%" in progress and "8/8" in progress and "val_accuracy=" in progress
    # the assembled model (uint8 photos in, probabilities out) equals the cached-feature head
    assert first.max_abs_diff < 1e-4 and first.top1_agreement == 1.0
    assert first.version == "1"
    client = MlflowClient(config.tracking.uri)
    run = client.get_run(first.run_id)
    duration = (run.info.end_time - run.info.start_time) / 1000  # the command's, extraction included
    assert run.data.metrics["train_final_seconds"] <= duration <= run.data.metrics["train_final_seconds"] + 10
    assert run.data.tags["tune_parent_run_id"] == tuned.parent_run_id
    assert "system/cpu_utilization_percentage" in run.data.metrics  # MLflow's system metrics
    assert sorted(i.tags[0].value for i in run.inputs.dataset_inputs) == ["train", "validation"]
    logged = client.get_logged_model(run.data.tags["fashion_exp.model_id"])  # an MLflow 3 LoggedModel
    assert logged.source_run_id == first.run_id and logged.status == LoggedModelStatus.READY
    requirements = Path(logged.artifact_location.removeprefix("file://"), "requirements.txt").read_text().split()
    assert requirements == [f"{name}=={installed(name)}" for name in ("mlflow", "keras", "numpy", "tensorflow")]
    assert inferred == []  # given, not inferred (6 s of CPU at each train-final)
    # the model is its run's output (the run page lists it), with its hyperparameters, validation
    # scores and a description; its registry version says how it was chosen and its validation score
    assert [m.model_id for m in run.outputs.model_outputs] == [logged.model_id]
    assert logged.params["hp.augmentation"] == "shear_zoom_flip" and logged.params["image_size"] == "32"
    assert {m.key for m in logged.metrics} >= {"val_accuracy", "val_loss"}
    assert {m.dataset_name for m in logged.metrics} == {
        run.inputs.dataset_inputs[0].dataset.name.split("/")[0] + "/validation"
    }
    version = client.get_model_version("fashion-classifier", "1")
    assert (
        "what promote ranks versions by" in version.description and "what promote" in logged.tags["mlflow.note.content"]
    )
    assert float(version.tags["val_accuracy"]) == pytest.approx(run.data.metrics["val_accuracy"], abs=1e-4)
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"] and run.data.tags["mlflow.note.content"]
    assert client.get_model_version("fashion-classifier", "1").source == f"models:/{logged.model_id}"
    assert run.data.params["hp.augmentation"] == "shear_zoom_flip" and run.data.params["views"] == "2"
    assert len(client.get_metric_history(first.run_id, "epoch_val_accuracy")) == 4
    # two restarts (seeds 42, 43) logged; the kept one has the best val_accuracy of the two
    restarts = [m.value for m in client.get_metric_history(first.run_id, "restart_val_accuracy")]
    assert len(restarts) == 2 and first.val_accuracy == max(restarts)
    assert run.data.params["seed"] == str(first.seed) and first.seed in (42, 43)
    assert len(client.get_metric_history(first.run_id, "restart_1_val_accuracy")) == 4
    loaded = registry.load("models:/fashion-classifier/1", config.tracking.uri)
    assert loaded.class_names == ["hat", "pants", "shoes"] and loaded.image_size == 32 and loaded.version == "1"

    # nothing evaluated yet: promotion needs --force
    with pytest.raises(UserError, match="evaluate"):
        registry.promote(config.tracking.uri, "fashion-classifier")
    result, _ = evaluate(config, None)
    assert 0.0 <= result.accuracy <= 1.0 and sum(r["support"] for r in result.per_class) == 12
    assert client.get_run(first.run_id).data.metrics["test_accuracy"] == pytest.approx(result.accuracy)
    inputs = client.get_run(first.run_id).inputs.dataset_inputs
    assert sorted(i.tags[0].value for i in inputs) == ["test", "train", "validation"]
    linked = {m.key: m for m in client.get_logged_model(logged.model_id).metrics}  # test scores on the model's page
    assert linked["test_accuracy"].value == pytest.approx(result.accuracy)
    assert linked["test_accuracy"].dataset_name.endswith("/test")
    assert "evaluation/confusion_matrix.png" in [a.path for a in client.list_artifacts(first.run_id, "evaluation")]
    changes = registry.promote(config.tracking.uri, "fashion-classifier")
    shipped = run.data.metrics["val_accuracy"]
    assert changes == [
        f"'fashion-classifier@champion' -> version 1 (val accuracy {shipped:.4f}, test accuracy {result.accuracy:.4f})"
    ]

    # a second version, worse on validation, is refused unless forced; the old champion becomes 'previous'
    second = train_final(load_config([*final_overrides, "final.hp.learning_rate=0.1", "final.epochs=1"]))
    client.log_metric(second.run_id, "val_accuracy", shipped - 0.5)  # made worse, whatever it scored
    client.set_model_version_tag("fashion-classifier", second.version, "test_accuracy", "1.0")  # test: no say
    with pytest.raises(UserError, match="worse than champion version 1"):
        registry.promote(config.tracking.uri, "fashion-classifier", version=second.version)
    registry.promote(config.tracking.uri, "fashion-classifier", version=second.version, force=True)
    assert str(client.get_model_version_by_alias("fashion-classifier", "champion").version) == second.version
    assert str(client.get_model_version_by_alias("fashion-classifier", "previous").version) == "1"
    assert main(["promote", "--rollback", *final_overrides]) == 0
    assert str(client.get_model_version_by_alias("fashion-classifier", "champion").version) == "1"
    assert "champion' -> version 1" in capsys.readouterr().out

    # predict: good and broken files, a folder, JSON, exit code
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", COLORS["shoes"])
    (photos / "broken.jpg").write_bytes(b"plain text, not a photo")
    assert main(["predict", str(photos), "--json", *final_overrides]) == 1
    out = json.loads(capsys.readouterr().out)
    assert [p["path"].rsplit("/", 1)[-1] for p in out] == ["a.jpg", "broken.jpg"]
    assert len(out[0]["top"]) == 3 and out[0]["error"] is None
    assert abs(sum(t["probability"] for t in out[0]["top"]) - 1) < 1e-4
    assert out[1]["top"] == [] and "not an image" in out[1]["error"]
    assert main(["predict", str(photos / "a.jpg"), "--top-k", "1", *final_overrides]) == 0
    assert "a.jpg" in capsys.readouterr().out
    # every call above went through explicit clients: MLflow's global URIs are as they were
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == global_uris
    assert config.tracking.uri not in global_uris


@pytest.mark.parametrize("error,status", [(KeyboardInterrupt(), "KILLED"), (RuntimeError("disk full"), "FAILED")])
def test_an_interrupted_or_crashed_final_run_is_marked(final_overrides, tuned, monkeypatch, error, status):
    from fashion_exp.final import train as final_train

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(final_train, "assemble", broken)
    config = load_config(final_overrides)
    with pytest.raises(type(error)):
        train_final(config)
    client = MlflowClient(config.tracking.uri)
    experiment = client.get_experiment_by_name(config.final.experiment)
    assert [r.info.status for r in client.search_runs([experiment.experiment_id])] == [status]
    assert client.search_model_versions(f"name='{config.final.registered_model}'") == []


def test_predict_missing_path_and_bad_model(final_overrides, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope.jpg"), *final_overrides]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    write_image(tmp_path / "x.jpg", COLORS["hat"])
    assert main(["predict", str(tmp_path / "x.jpg"), *final_overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no version with alias 'champion' yet: run train-final, then evaluate, then promote" in err
    assert err.startswith("error: models:/fashion-classifier@champion: ") and "\n" not in err
    assert main(["predict", str(tmp_path / "x.jpg"), "--model", str(tmp_path), *final_overrides]) == 2
    assert "not an MLflow model folder" in capsys.readouterr().err


def test_promote_without_versions(final_overrides, capsys):
    assert main(["promote", *final_overrides]) == 2
    assert "run train-final first" in capsys.readouterr().err
    assert main(["promote", "--rollback", *final_overrides]) == 2
    assert "nothing to roll back" in capsys.readouterr().err


def test_an_ensemble_exports_to_onnx_matches_keras_and_serves(final_overrides, tuned, capsys):
    """A two-head ensemble (final.ensemble=2) through train-final, export-onnx and serve."""
    import onnx as onnx_lib
    from fastapi.testclient import TestClient

    from fashion_exp.final.onnx_export import INT8_ARTIFACT, INT8_HOLDS, load_onnx
    from fashion_exp.serving.app import ServeSettings, create_app
    from fashion_exp.serving.backends import open_predictor
    from tests.test_serve import jpeg_bytes

    config = load_config([*final_overrides, "final.ensemble=2"])
    final = train_final(config)
    assert final.ensemble_size == 2 and final.max_abs_diff < 1e-4 and final.top1_agreement == 1.0
    uri, model = config.tracking.uri, "models:/fashion-classifier/1"
    client = MlflowClient(uri)
    by_size = {m.step: m.value for m in client.get_metric_history(final.run_id, "ensemble_val_accuracy")}
    assert set(by_size) == {1, 2} and by_size[1] == pytest.approx(final.val_accuracy, abs=1e-6)  # k=1: the best restart
    assert client.get_run(final.run_id).data.metrics["val_accuracy"] == pytest.approx(by_size[2])
    assert final.ensemble_val_accuracy == pytest.approx(by_size[2])
    assert "checkpoint/ensemble.keras" in [a.path for a in client.list_artifacts(final.run_id, "checkpoint")]
    assert {"head_0", "head_1"} <= {layer.name for layer in registry.load(model, uri).model.layers}
    with pytest.raises(UserError, match="run `python -m fashion_exp export-onnx` first"):
        load_onnx(model, uri)
    with pytest.raises(UserError, match="no int8 ONNX file yet"):
        open_predictor(model, uri, "onnx-int8")
    assert open_predictor(model, uri, "auto").backend == "keras"  # nothing exported yet
    assert main(["export-onnx", "--model", model, *final_overrides]) == 0
    out = capsys.readouterr().out
    assert "top-1 agreement 100.0%" in out and "onnx/model.onnx, onnx/model.int8.onnx in run" in out
    assert "ONNX int8 vs Keras: top-1 agreement" in out
    onnx = load_onnx(model, uri)
    keras_model = registry.load(model, uri)
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(onnx.predict(images), keras_model.predict(images, 32), atol=1e-5)
    int8 = load_onnx(model, uri, int8=True)
    assert int8.predict(images).shape == (5, 3) and np.allclose(int8.predict(images).sum(1), 1, atol=1e-3)
    run = MlflowClient(uri).get_run(keras_model.run_id)
    int8_graph = onnx_lib.load_from_string(artifact_bytes(uri, run.info.run_id, INT8_ARTIFACT)).graph
    assert "QuantizeLinear" in {node.op_type for node in int8_graph.node}  # quantized, not a copy of fp32
    assert {"onnx_int8_val_accuracy", "keras_val_accuracy", "onnx_int8_top1_agreement"} <= set(run.data.metrics)
    # auto follows export-onnx's verdict: int8 only when it held validation accuracy (and is the faster)
    speeds = run.data.metrics
    faster = "onnx-int8" if speeds["onnx_int8_images_per_s"] > speeds["onnx_images_per_s"] else "onnx"
    for holds, expected in (("true", faster), ("false", "onnx")):
        MlflowClient(uri).set_tag(keras_model.run_id, INT8_HOLDS, holds)
        opened = open_predictor(model, uri, "auto")
        predictor, backend, why = opened.predictor, opened.backend, opened.why
        assert backend == expected and why.startswith("auto:")
        assert predictor.session.get_modelmeta() is not None
    assert open_predictor(model, uri, "onnx-int8").predictor.predict(images).shape == (5, 3)
    # a CPU told it has BF16 units: export-onnx measures OpenVINO bf16 too, and says what it ran
    assert main(["export-onnx", "--model", model, *final_overrides, "model.cpu_features=[avx2,avx512_bf16]"]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO bf16 vs Keras: top-1 agreement" in out and "Images a second on the validation photos: keras" in out
    metrics = MlflowClient(uri).get_run(keras_model.run_id).data.metrics
    assert {"onnx_bf16_top1_agreement", "onnx_bf16_max_prob_diff", "onnx_bf16_images_per_s"} <= set(metrics)
    opened = open_predictor(model, uri, "openvino-bf16")
    bf16, backend = opened.predictor, opened.backend
    np.testing.assert_allclose(bf16.predict(images), keras_model.predict(images, 32), atol=0.05)
    assert ("no BF16 units" in out) == (bf16.precision == "f32")
    from fashion_exp.final.onnx_export import BF16_HOLDS

    held = MlflowClient(uri).get_run(keras_model.run_id).data.tags[BF16_HOLDS]
    if bf16.precision == "bf16":  # (the synthetic split's few photos cannot show a 1-point margin: the gate says so)
        assert held == "false" and "photos are too few for a 1.5-pt margin" in out
    else:
        assert held == "false"
    client = TestClient(
        create_app(onnx, ServeSettings.from_config(load_config([*final_overrides, "serve.backend=onnx"])))
    )
    answer = client.post("/predict", content=jpeg_bytes(COLORS["hat"]), headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json()["model"]["backend"] == "onnx"
    assert answer.json()["category"] in ["hat", "pants", "shoes"]
    client = TestClient(create_app(int8, ServeSettings.from_config(load_config(final_overrides), "onnx-int8")))
    answer = client.post("/predict", content=jpeg_bytes(COLORS["hat"]), headers={"content-type": "image/jpeg"})
    assert answer.status_code == 200 and answer.json()["model"]["backend"] == "onnx-int8"


def test_int8_holds_within_half_a_point():
    from fashion_exp.final.onnx_export import Compared, ExportResult

    def result(keras: float, int8: float) -> ExportResult:
        compared = {"onnx-int8": Compared("onnx-int8", "int8", 0.99, 0.1, int8, 30.0)}
        return ExportResult("a", "b", None, 1000, keras, load_config([]).final.int8_tolerance, compared)

    assert result(0.900, 0.895).int8_holds and result(0.900, 0.910).int8_holds
    assert not result(0.900, 0.894).int8_holds


def test_promote_chooses_on_validation_never_on_test(store_uri):
    uri = store_uri
    client = MlflowClient(uri, uri)
    client.create_registered_model("m")
    experiment = client.create_experiment("e")
    # version -> (val accuracy, val loss, test accuracy or None when not evaluated)
    scores = {"1": (0.90, 0.25, 0.88), "2": (0.90, 0.30, 0.95), "3": (0.85, 0.10, 0.99), "4": (0.95, 0.1, None)}
    for version, (val_accuracy, val_loss, test) in scores.items():
        run_id = client.create_run(experiment).info.run_id
        old = version == "2"  # a run from before 2026-12-01 kept its score as shipped_*; its val_* were curves
        client.log_metric(run_id, "shipped_val_accuracy" if old else "val_accuracy", val_accuracy)
        client.log_metric(run_id, "shipped_val_loss" if old else "val_loss", val_loss)
        if old:
            client.log_metric(run_id, "val_accuracy", 0.99)  # a last epoch's, which promote must not read
        assert str(client.create_model_version("m", f"runs:/{run_id}/model", run_id).version) == version
        if test is not None:
            assert registry.record_test_accuracy(uri, "m", run_id, test, 0.3) == [version]
    assert client.get_model_version("m", "1").tags == {"test_accuracy": "0.880000", "test_loss": "0.300000"}
    # 1 and 2 tie on validation accuracy: the lower validation loss wins, although 2 and 3 score
    # higher on test and 2 is newer; 4 is best on validation but has no test score yet
    assert registry.promote(uri, "m") == ["'m@champion' -> version 1 (val accuracy 0.9000, test accuracy 0.8800)"]
    # an equal validation accuracy is not a worse one: version 2 may replace 1 without --force
    assert registry.promote(uri, "m", version="2")[-1] == (
        "'m@champion' -> version 2 (val accuracy 0.9000, test accuracy 0.9500)"
    )
    with pytest.raises(UserError, match=r"version 3 \(val accuracy 0.8500\) is worse than champion version 2"):
        registry.promote(uri, "m", version="3")  # its best test score does not make it better
    with pytest.raises(UserError, match="version 4 has no test accuracy: run evaluate on it first"):
        registry.promote(uri, "m", version="4")
    with pytest.raises(UserError, match=r"'m' has no version 99 \(versions: 1, 2, 3, 4\)"):
        registry.promote(uri, "m", version=99)  # (a number, as --version gives it)
    assert str(client.get_model_version_by_alias("m", "champion").version) == "2"  # refusals moved nothing


def test_promote_without_a_validation_score_asks_for_a_version(store_uri):
    uri = store_uri
    client = MlflowClient(uri, uri)
    client.create_registered_model("m")
    run_id = client.create_run(client.create_experiment("e")).info.run_id  # not a train-final run
    client.create_model_version("m", f"runs:/{run_id}/model", run_id)
    registry.record_test_accuracy(uri, "m", run_id, 0.9)
    with pytest.raises(UserError, match="no evaluated version of 'm' has a validation score.*--version"):
        registry.promote(uri, "m")
    assert registry.promote(uri, "m", version="1") == ["'m@champion' -> version 1 (test accuracy 0.9000)"]


def test_a_trials_csv_row_with_rows_its_space_did_not_name_reads_as_their_defaults():
    """trials.csv leaves a hyperparameter the search did not vary empty (ema, label_smoothing,
    blocks in a frozen search): train-final's members read it as the default, not as a number."""
    from fashion_exp.final.train import with_overrides

    row = {"learning_rate": "0.001", "size_inner": "100", "droprate": "0.2", "augmentation": "none"}
    params = with_overrides(load_config(["model=tiny"]), {**row, "blocks": "", "ema": "", "label_smoothing": ""})
    assert (params.blocks, params.ema, params.label_smoothing, params.learning_rate) == (0, 0.0, 0.0, 0.001)


def test_a_missing_data_folder_stops_train_final_and_evaluate_in_one_line_before_other_work(
    final_overrides, tuned, tmp_path, capsys
):
    """A data.root that is not there (given on the command line, so nothing is taken from the search)
    is one line, and nothing is trained, logged or registered; evaluate of a model that does not
    exist is one line too."""
    missing = tmp_path / "nowhere"
    assert main(["train-final", *final_overrides, f"data.root={missing}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: dataset not found at {missing}"), err
    client = MlflowClient(load_config(final_overrides).tracking.uri)
    assert client.search_registered_models() == []
    assert main(["evaluate", *final_overrides, "--model", "models:/fashion-classifier/3"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("error: cannot load model models:/fashion-classifier/3")
    )
