import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.config import load_config
from fashion_exp.hyperparameters import NAMES
from fashion_exp.search.hypermodel import HeadHyperModel
from fashion_exp.search.observers import TrialProgress
from fashion_exp.search.run import run_search
from fashion_exp.tracking.queries import artifact_bytes, artifact_file
from tests.synthetic import scan


def runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("test")
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("fashion_exp.kind") == "search"]
    children = [r for r in found if r.data.tags.get("fashion_exp.kind") == "trial"]
    return client, parents, children


def artifact_paths(client, run_id, path=None):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return out


@pytest.fixture
def fit_calls(monkeypatch):
    """Records (trial hyperparameters) for every head fit."""
    calls = []
    original = HeadHyperModel.fit

    def recording_fit(self, hp, model, *args, **kwargs):
        calls.append(dict(hp.values))
        return original(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(HeadHyperModel, "fit", recording_fit)
    return calls


def test_two_trial_search_is_tracked(overrides, fit_calls, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # the search lasts seconds, not minutes
    config = load_config(overrides)
    result = run_search(config)
    assert result.trials == 2 and len(fit_calls) == 2
    # what the plan's measured rates are made of: 2 trials of tuner.epochs=3 (no patience), the photos extracted
    assert (result.work.trials_run, result.work.epochs_run) == (2, 2 * config.tuner.epochs)
    assert result.work.extracted_images > 0 and result.work.extraction_seconds > 0
    client, parents, children = runs(config.tracking.uri)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.run_id == result.parent_run_id and parent.info.status == "FINISHED"
    assert parent.data.params["tuner.type"] == "bayesian" and "dataset_fingerprint" in parent.data.tags
    # the keys a user compares, one per hyperparameter's space; the whole config is config.yaml
    assert parent.data.params["space.droprate"] == "[0.0, 0.2, 0.5, 0.8]" and len(parent.data.params) < 30
    assert [k for k in parent.data.params if k.endswith("droprate")] == ["space.droprate", "best.droprate"]
    # MLflow's duration is the command's, as total_seconds counts it (the scan and extraction included)
    duration = (parent.info.end_time - parent.info.start_time) / 1000
    assert parent.data.metrics["total_seconds"] <= duration <= parent.data.metrics["total_seconds"] + 5
    experiment = client.get_experiment(parent.info.experiment_id)  # mlflow ui: the model-training view
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.tags["best_trial_id"] == result.best_trial_id
    assert parent.data.metrics["val_accuracy"] == pytest.approx(result.best_score)  # the best trial's score
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(parent.data.metrics)
    dataset = scan(config.data.root, ["train", "validation"])
    expected = {("train", dataset.fingerprint(["train"])), ("validation", dataset.fingerprint(["validation"]))}
    for run in (parent, *children):  # the splits as MLflow datasets, each with its split and digest
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert {(i.tags[0].value, i.dataset.digest) for i in inputs} == expected
    for record in (i.dataset for i in client.get_run(parent.info.run_id).inputs.dataset_inputs):
        split = record.name.rsplit("/", 1)[1]  # what the dataset panel shows: source, classes, counts, schema
        assert json.loads(record.source)["uri"] == str((Path(config.data.root) / split).resolve())
        profile = json.loads(record.profile)
        assert profile["classes"] == dataset.classes and profile["per_class"] == dataset.counts()[split]
        assert [c["name"] for c in json.loads(record.schema)["mlflow_colspec"]] == ["image", "label"]
    assert {"best.learning_rate", "best.size_inner", "best.droprate", "best.augmentation"} <= set(parent.data.params)
    parent_files = artifact_paths(client, parent.info.run_id)
    for name in (
        "config.yaml",
        "dataset_report.txt",
        "search_space.json",
        "trials.csv",
        "plots/val_accuracy_by_trial.png",
    ):
        assert name in parent_files
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        # blocks 0 too, what they trained with; no block_lr: a frozen backbone has none
        assert set(child.data.params) == set(NAMES) - {"block_lr"}
        history = client.get_metric_history(child.info.run_id, "epoch_val_accuracy")
        assert sorted(m.step for m in history) == [0, 1, 2]
        # the run's val_accuracy is its score (the best epoch's), not the last epoch's: it sorts right
        assert child.data.metrics["val_accuracy"] == pytest.approx(max(m.value for m in history))
        assert [m.value for m in history].index(max(m.value for m in history)) == child.data.metrics["best_epoch"]
        values = child.data.params
        expected = f"t{child.data.tags['fashion_exp.trial_id']} lr={float(values['learning_rate']):g}"
        assert child.info.run_name.startswith(expected) and f"drop={float(values['droprate']):g}" in child.info.run_name
        assert "rss_mb" in child.data.metrics
        files = artifact_paths(client, child.info.run_id)
        assert "checkpoint/head.keras" in files and "plots/learning_curves.png" in files
    assert artifact_bytes(client.tracking_uri, parent.info.run_id, "trials.csv").decode().count("COMPLETED") == 2


def test_best_checkpoint_holds_the_best_epoch(overrides):
    import keras
    import numpy as np

    from fashion_exp.data.augment import IDENTITY
    from fashion_exp.data.images import Decoder
    from fashion_exp.features.backbone import build_backbone
    from fashion_exp.features.cache import FeatureCache
    from fashion_exp.features.extract import Extractor, jobs_for_policy
    from fashion_exp.features.runtime import open_runner
    from tests.synthetic import scan

    config = load_config([*overrides, "tuner.max_trials=1", "tuner.epochs=4", "search.augmentation.values=[none]"])
    run_search(config)
    client, parents, children = runs(config.tracking.uri)
    with artifact_file(client.tracking_uri, children[0].info.run_id, "checkpoint/head.keras") as path:
        head = keras.models.load_model(path)
    dataset = scan(config.data.root, ["train", "validation"])
    backbone = build_backbone(config.model, config.data.image_size, config.seed)
    job = jobs_for_policy("validation", IDENTITY)[0]
    decoder = Decoder.for_data(config.data)
    cache = FeatureCache(f"{config.work_dir}/features")
    runner = open_runner(backbone, config.model.runtime, config.model.batch_size, config.work_dir)
    features = Extractor(runner, dataset, decoder, cache, config.model.batch_size, config.seed).run([job])[job]
    accuracy = float(np.mean(np.argmax(head.predict(features, verbose=0), axis=1) == dataset.labels("validation")))
    assert accuracy == pytest.approx(children[0].data.metrics["val_accuracy"], abs=1e-6)


def test_interrupted_search_resumes_without_duplicates(overrides, fit_calls, monkeypatch):
    config = load_config(overrides)
    original = TrialProgress.epoch_ended

    def interrupt(self, trial, epoch, logs):
        if trial.trial_id == "1" and epoch == 1:
            raise KeyboardInterrupt
        return original(self, trial, epoch, logs)

    monkeypatch.setattr(TrialProgress, "epoch_ended", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_search(config)
    _, parents, children = runs(config.tracking.uri)
    assert parents[0].info.status == "KILLED"
    assert {c.info.status for c in children} == {"FINISHED", "KILLED"}
    first_parent = parents[0].info.run_id
    trained_first = list(fit_calls)

    monkeypatch.setattr(TrialProgress, "epoch_ended", original)
    result = run_search(config)
    assert result.parent_run_id == first_parent and result.trials == 2
    assert fit_calls[len(trained_first) :] == [trained_first[1]]  # only the interrupted trial ran again
    _, parents, children = runs(config.tracking.uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["fashion_exp.trial_id"] for c in children) == ["0", "1"]
    assert all(c.info.status == "FINISHED" for c in children)

    again = run_search(config)  # a finished search: nothing is retrained
    assert again.parent_run_id == first_parent and len(fit_calls) == len(trained_first) + 1

    fresh = run_search(load_config([*overrides, "fresh=true"]))
    assert fresh.parent_run_id != first_parent
    _, parents, children = runs(config.tracking.uri)
    assert len(parents) == 2 and len(children) == 4


def test_failing_trial_is_recorded_and_search_goes_on(overrides, monkeypatch):
    original = HeadHyperModel.fit
    state = {"n": 0}

    def flaky_fit(self, hp, model, *args, **kwargs):
        state["n"] += 1
        if state["n"] == 1:
            raise RuntimeError("boom: out of something")
        return original(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(HeadHyperModel, "fit", flaky_fit)
    config = load_config(overrides)
    result = run_search(config)
    client, parents, children = runs(config.tracking.uri)
    statuses = sorted(c.info.status for c in children)
    assert statuses == ["FAILED", "FINISHED"]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "boom: out of something" in failed.data.tags["error"]
    assert parents[0].info.status == "FINISHED" and result.best_trial_id is not None


@pytest.mark.parametrize("tuner", ["bayesian", "grid", "hyperband"])
def test_every_tuner_runs(overrides, tuner):
    extra = [f"tuner={tuner}", "tuner.max_trials=2", "tuner.epochs=2"]
    config = load_config([*overrides, *extra])
    result = run_search(config)
    assert result.best_score is not None and result.trials >= 2


def test_bayesian_never_repeats_a_point_and_stops_when_the_grid_is_done(overrides, fit_calls):
    space = [
        "search.learning_rate.values=[0.01,0.1]",
        "search.size_inner.values=[0,10]",
        "search.droprate.values=[0.0]",
        "search.augmentation.values=[none]",
    ]
    config = load_config(
        [*overrides, *space, "tuner=bayesian", "tuner.initial_points=1", "tuner.max_trials=6", "tuner.epochs=2"]
    )
    result = run_search(config)
    points = [tuple(sorted(c.items())) for c in fit_calls]
    assert len(points) == len(set(points)) == 4 and result.trials == 4


def test_a_resumed_grid_search_goes_on_through_the_grid(overrides, fit_calls):
    """keras-tuner's grid oracle does not save its place in the grid: a grid search resumed with a
    larger tuner.max_trials (or after an interruption) used to end with the trials it had."""
    space = [
        "search.learning_rate.values=[0.01,0.1]",
        "search.size_inner.values=[10]",
        "search.droprate.values=[0.0]",
        "search.augmentation.values=[none,shear_zoom_flip]",
        "tuner=grid",
        "tuner.epochs=2",
    ]
    first = run_search(load_config([*overrides, *space, "tuner.max_trials=2"]))
    assert first.trials == 2 and len(fit_calls) == 2
    resumed = run_search(load_config([*overrides, *space, "tuner.max_trials=10"]))
    assert resumed.parent_run_id == first.parent_run_id and resumed.trials == 4
    points = [tuple(sorted(c.items())) for c in fit_calls]
    assert len(points) == len(set(points)) == 4  # the whole grid, each point once


def test_val_loss_objective_picks_the_lowest_val_loss(overrides):
    config = load_config([*overrides, "tuner=random", "tuner.max_trials=3", "tuner.objective=val_loss"])
    result = run_search(config)
    client, parents, children = runs(config.tracking.uri)
    best = {c.data.tags["fashion_exp.trial_id"]: c.data.metrics["val_loss"] for c in children}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "epoch_val_loss")
        assert child.data.metrics["val_loss"] == pytest.approx(min(m.value for m in history))
    assert len(best) == 3 and result.best_trial_id == min(best, key=best.get)
    assert parents[0].data.metrics["val_loss"] == pytest.approx(min(best.values()))
    assert b"val_loss" in artifact_bytes(client.tracking_uri, parents[0].info.run_id, "trials.csv").split(b"\n")[0]


def test_an_experiment_made_before_the_kind_tag_gets_it(tmp_path):
    from mlflow.tracking import MlflowClient

    from fashion_exp.tracking.experiments import connect

    uri = f"sqlite:///{tmp_path / 'old.db'}"
    MlflowClient(uri).create_experiment("made-by-an-older-version")
    client, experiment_id = connect(uri, "made-by-an-older-version")
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_cross_validated_search_scores_trials_on_train_and_validation(overrides):
    config = load_config([*overrides, "tuner.max_trials=1", "tuner.folds=2"])
    result = run_search(config)
    client, parents, children = runs(config.tracking.uri)
    assert result.trials == 1 and children[0].info.status == "FINISHED"
    assert parents[0].data.params["tuner.folds"] == "2"
    history = client.get_metric_history(children[0].info.run_id, "epoch_val_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2]
    # every train and validation photo is held out once: the pooled score is a multiple of 1/n
    dataset = scan(config.data.root, ["train", "validation"])
    n = len(dataset.paths("train")) + len(dataset.paths("validation"))
    assert result.best_score * n == pytest.approx(round(result.best_score * n), abs=1e-4)
    plain = load_config(overrides)
    from fashion_exp.search.run import search_id

    assert search_id(config, "d", "w") != search_id(plain, "d", "w")  # a cross-validated search is another search


def test_the_comparison_plot_reads_trials_from_before_the_epoch_prefix(store_uri):
    """A search resumed across the 2026-12-01 rename holds trials whose curves are val_accuracy,
    and trials whose curves are epoch_val_accuracy: the parent's comparison plot shows both."""
    from fashion_exp.tracking.search_runs import SearchTracker

    tracker = SearchTracker(store_uri, "e")
    tracker.open_search("s", resume=False, run_name="search")
    for trial, name in (("00", "val_accuracy"), ("01", "epoch_val_accuracy")):
        tracker.start_trial(trial, {"learning_rate": 0.1})
        for step, value in enumerate([0.5, 0.6]):
            tracker.client.log_metric(tracker.children[trial], name, value, step=step)
        tracker.client.set_terminated(tracker.children[trial])
    assert tracker.curves("val_accuracy") == {"trial 00": [0.5, 0.6], "trial 01": [0.5, 0.6]}


def test_the_chief_ends_the_trial_runs_its_killed_workers_left_running(store_uri):
    """A worker killed after its grace (a loaded machine, SIGTERM to the chief) cannot end its
    trial's run: the parent's owner ends every child still RUNNING with its own status, so a
    stopped search leaves no run RUNNING."""
    from fashion_exp.tracking.search_runs import SearchTracker

    chief = SearchTracker(store_uri, "e")
    chief.open_search("s", resume=False, run_name="search")
    worker = SearchTracker(store_uri, "e")
    worker.attach("s", "127.0.0.1:1")
    worker.start_trial("00", {"learning_rate": 0.1})  # (the worker dies here: nothing ends its run)
    worker.start_trial("01", {"learning_rate": 0.01})
    worker.end_trial("01", "trial 01", None, error="out of memory")  # (ended: it keeps its status)
    with pytest.raises(KeyboardInterrupt), chief.recording():
        raise KeyboardInterrupt
    client = chief.client
    assert client.get_run(worker.children["00"]).info.status == "KILLED"
    assert client.get_run(worker.children["01"]).info.status == "FAILED"
    assert client.get_run(chief.parent_id).info.status == "KILLED"
