"""combine: registered models averaged in one model with one frozen backbone (synthetic data, tiny backbone)."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.cli import main
from fashion_exp.config import load_config
from fashion_exp.final.evaluate import evaluate
from fashion_exp.final.train import train_final
from fashion_exp.tracking import registry
from tests.test_final import final_overrides, tuned, tuned_store  # noqa: F401 - fixtures

V = "models:/fashion-classifier/{}"


def test_two_models_become_one_with_one_frozen_backbone(final_overrides, tuned, capsys):  # noqa: F811
    config = load_config(final_overrides)
    train_final(load_config([*final_overrides, "final.restarts=1"]))  # one head
    train_final(load_config([*final_overrides, "final.ensemble=2", "final.hp.learning_rate=0.01"]))
    assert main(["combine", "--model", V.format(1), "--model", V.format(2), *final_overrides]) == 0
    out = capsys.readouterr().out
    assert "registered 'fashion-classifier' version 3" in out and "top-1 agreement 100.0%" in out

    uri = config.tracking.uri
    one, two, both = (registry.load(V.format(v), uri) for v in (1, 2, 3))
    images = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    mean = (one.predict(images, 8) + two.predict(images, 8)) / 2  # each model weighs alike, whatever its heads
    np.testing.assert_allclose(both.predict(images, 8), mean, atol=1e-5)
    names = [layer.name for layer in both.model.layers]
    assert names.count("frozen") == 1  # the backbone runs once
    assert {"member_0_head_0", "member_1_head_0", "member_1_head_1"} <= set(names)
    frozen = both.model.get_layer("frozen").count_params()
    assert both.model.count_params() == one.model.count_params() + two.model.count_params() - frozen
    assert both.class_names == one.class_names and both.image_size == 32

    client = MlflowClient(uri)
    run = client.get_run(both.run_id)
    assert run.data.tags["fashion_exp.kind"] == "final" and run.data.params["members"] == f"{V.format(1)},{V.format(2)}"
    for index, member in enumerate((one, two)):  # each member scored on validation as train-final scored it
        shipped = client.get_run(member.run_id).data.metrics["val_accuracy"]
        assert run.data.metrics[f"member_{index}_val_accuracy"] == pytest.approx(shipped, abs=1e-6)
    assert {"val_accuracy", "val_loss"} <= set(run.data.metrics)  # what promote ranks by
    assert run.data.metrics["assembled_max_abs_diff"] < 1e-5 and run.data.metrics["ensemble_size"] == 3
    result, _ = evaluate(config, V.format(3))
    assert client.get_run(both.run_id).data.metrics["test_accuracy"] == pytest.approx(result.accuracy)
    assert main(["promote", "--version", "3", "--force", *final_overrides]) == 0
    capsys.readouterr()
    assert main(["export-onnx", *final_overrides]) == 0  # the champion: the combined model
    assert "validation photos: max |diff|" in capsys.readouterr().out
    # a combined model is not split again (its members are weighted by group, not by head)
    assert main(["combine", "--model", V.format(3), "--model", V.format(1), *final_overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err == [f"error: model {V.format(3)} has no head layer: combine takes models made by train-final"]


def test_models_on_another_frozen_backbone_are_refused(final_overrides, tuned, capsys):  # noqa: F811
    train_final(load_config([*final_overrides, "final.restarts=1"]))
    train_final(load_config([*final_overrides, "final.restarts=1", "seed=7"]))  # another tiny base
    capsys.readouterr()
    assert main(["combine", "--model", V.format(1), "--model", V.format(2), *final_overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]  # after progress bars
    assert err == [
        f"error: {V.format(1)} and {V.format(2)} do not share their frozen backbone (another weights file or "
        "final.hp.blocks): combine models trained with the same ones"
    ]
    assert len(MlflowClient(load_config(final_overrides).tracking.uri).search_model_versions("")) == 2  # nothing new


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([V.format(1)], "error: combine: give two --model or more (registry URIs, runs:/ URIs or model folders)"),
        ([V.format(1), V.format(1)], f"error: combine: {V.format(1)} is given twice"),
        ([V.format(9), V.format(1)], f"error: cannot load model {V.format(9)}"),
    ],
)
def test_combine_refuses_bad_members_in_one_line(final_overrides, capsys, models, message):  # noqa: F811
    words = [word for model in models for word in ("--model", model)]
    assert main(["combine", *words, *final_overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and err[0].startswith(message), err
