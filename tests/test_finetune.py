"""Fine-tuning trials (search.blocks): cut backbones, cached activation maps, block learning rates,
the disk check, the time budget, and a fine-tuned model through train-final and ONNX."""

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from fashion_exp.cli import main
from fashion_exp.config import load_config
from fashion_exp.errors import UserError
from fashion_exp.features.backbone import build_backbone, fresh_top
from fashion_exp.features.cache import FeatureCache, FeatureKey, bytes_per_image
from fashion_exp.features.layers import MatmulSeparableConv2D, plain_copy
from fashion_exp.final.train import train_final
from fashion_exp.head.fit import map_dataset
from fashion_exp.head.model import build_head
from fashion_exp.hyperparameters import HeadParams
from fashion_exp.search import oracles
from fashion_exp.search import tuner as tuner_module
from fashion_exp.search.hypermodel import HeadHyperModel
from fashion_exp.search.run import run_search

FINETUNE = ["search=finetune", "search.blocks.values=[1]", "search.block_lr.values=[0.1]"]


def tiny(blocks: int):
    return build_backbone(load_config(["model=tiny"]).model, 32, seed=1, blocks=blocks)


def test_the_cut_backbone_and_its_top_compute_the_frozen_features():
    cut, whole = tiny(1), tiny(0)
    assert cut.feature_shape == (15, 15, 8) and whole.feature_shape == (16,)
    assert cut.fingerprint == f"{whole.fingerprint}-cut1"  # its own cache entries, ONNX files and search ids
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    top = fresh_top(cut.top)
    np.testing.assert_allclose(np.asarray(top(cut.model(images))), np.asarray(whole.model(images)), atol=1e-6)
    assert len(top.trainable_weights) == 2 and not cut.top.trainable_weights  # the copy trains, the source never


def test_batchnorm_stays_frozen_in_a_fresh_top():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 1, name="conv")(inputs)
    pretrained = keras.Model(
        inputs, keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization(name="bn")(x))
    )
    pretrained.trainable = False
    top = fresh_top(pretrained)
    assert top.get_layer("conv").trainable and not top.get_layer("bn").trainable
    params = HeadParams(0.01, 0, 0.0, "none", blocks=1, block_lr=1.0)
    head = build_head((4, 4, 3), 2, params, seed=0, steps_per_epoch=1, top=top)
    stats = [w.copy() for w in top.get_layer("bn").get_weights()]
    head.fit(np.random.default_rng(0).normal(size=(8, 4, 4, 3)), np.arange(8) % 2, epochs=2, verbose=0)
    for before, after in zip(stats, top.get_layer("bn").get_weights(), strict=True):  # gamma, beta and statistics
        np.testing.assert_array_equal(before, after)
    assert not np.array_equal(top.get_layer("conv").get_weights()[0], pretrained.get_layer("conv").get_weights()[0])


def uses_fast_layers(model) -> bool:
    """Whether `model`, or a model nested in it, holds a MatmulSeparableConv2D."""
    return any(
        isinstance(layer, MatmulSeparableConv2D) or (isinstance(layer, keras.Model) and uses_fast_layers(layer))
        for layer in model.layers
    )


def separable_top():
    inputs = keras.Input((5, 5, 8))
    x = keras.layers.SeparableConv2D(12, 3, padding="same", use_bias=False, name="sep1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    x = keras.layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep2")(x)
    pretrained = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    pretrained.get_layer("sep2").bias.assign(np.linspace(-0.5, 0.5, 6))  # a bias that matters
    pretrained.trainable = False
    return pretrained


def test_fine_tuned_separable_convolutions_train_as_matmuls_and_ship_as_keras_layers(tmp_path):
    """fresh_top trains MatmulSeparableConv2D (the same outputs and gradients as SeparableConv2D);
    plain_copy gives back Keras' own layer with the trained weights, saved with no fashion_exp class."""
    pretrained = separable_top()
    top = fresh_top(pretrained)
    assert isinstance(top.get_layer("sep1"), MatmulSeparableConv2D) and uses_fast_layers(top)
    x = np.random.default_rng(0).normal(size=(4, 5, 5, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(top(x)), np.asarray(pretrained(x)), atol=1e-5)
    plain = keras.models.clone_model(pretrained)
    plain.set_weights(pretrained.get_weights())
    gradients = []
    for model in (plain, top):
        weights = [w for name in ("sep1", "sep2") for w in model.get_layer(name).weights]
        with tf.GradientTape() as tape:
            tape.watch([w.value for w in weights])
            loss = tf.reduce_sum(model(x, training=False) ** 2)
        gradients.append(tape.gradient(loss, [w.value for w in weights]))
    assert len(gradients[0]) == 5  # 2 kernels each, and sep2's bias
    for ours, keras_own in zip(gradients[1], gradients[0], strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_own), rtol=1e-4, atol=1e-5)

    params = HeadParams(0.01, 4, 0.0, "none", blocks=1, block_lr=1.0)
    head = build_head((5, 5, 8), 3, params, seed=0, steps_per_epoch=1, top=top)
    head.fit(x, np.arange(4) % 3, epochs=2, verbose=0)
    shipped = plain_copy(head)
    assert not uses_fast_layers(shipped) and uses_fast_layers(head)
    np.testing.assert_allclose(np.asarray(shipped(x)), np.asarray(head(x)), atol=1e-5)
    shipped.save(tmp_path / "head.keras")
    with zipfile.ZipFile(tmp_path / "head.keras") as saved:
        layers = json.dumps(json.loads(saved.read("config.json"))["config"])  # (not its compile config)
    assert "SeparableConv2D" in layers and "fashion_exp" not in layers


def test_block_lr_scales_the_blocks_step_and_only_theirs():
    """Adam's first step moves each weight by about its learning rate: block_lr=0.001 moves the
    blocks a thousandth as far as block_lr=1 from the same start, and the head just as far."""
    cut = tiny(1)
    x = np.random.default_rng(1).normal(size=(16, 15, 15, 8)).astype(np.float32)
    y = np.arange(16) % 3
    moved = {}
    for block_lr in (1.0, 0.001):
        head = build_head((15, 15, 8), 3, HeadParams(0.01, 8, 0.0, "none", 1, block_lr), 0, 1, fresh_top(cut.top))
        before = [w.copy() for w in head.get_weights()]
        head.train_on_batch(x, y)
        moved[block_lr] = [float(np.mean(np.abs(a - b))) for a, b in zip(head.get_weights(), before, strict=True)]
    blocks = [i for i, w in enumerate(head.weights) if w.path.startswith("conv2/")]
    others = [i for i in range(len(moved[1.0])) if i not in blocks]
    assert blocks and others
    for i in blocks:
        assert moved[0.001][i] == pytest.approx(moved[1.0][i] * 0.001, rel=0.05)
    for i in others:
        assert moved[0.001][i] == pytest.approx(moved[1.0][i], rel=1e-3)


def test_activation_maps_are_cached_in_float16_memory_mapped_and_atomically(tmp_path):
    cache = FeatureCache(tmp_path)
    key = FeatureKey("w", "32px", "train", "f", "identity", 0, 0)
    with cache.writing(key, (3, 2, 2, 4)) as rows:
        rows[:] = 1.5
    loaded = cache.load(key)
    assert isinstance(loaded, np.memmap) and loaded.dtype == np.float16 and np.all(loaded == 1.5)
    assert bytes_per_image((10, 10, 1024)) == 204_800 and bytes_per_image((2048,)) == 8192
    other = FeatureKey("w", "32px", "validation", "f", "identity", 0, 0)
    with pytest.raises(RuntimeError), cache.writing(other, (3, 2, 2, 4)) as rows:
        rows[0] = 1
        raise RuntimeError("extraction failed")
    assert cache.load(other) is None and not list(tmp_path.glob(".*.tmp"))  # nothing half-written is left


def test_activation_map_batches_read_view_e_mod_k_as_float32():
    views = [np.full((5, 2, 2, 1), v, np.float16) for v in (0, 1)]
    batches = list(map_dataset(views, np.arange(5), 2, 1, 4, seed=0).as_numpy_iterator())
    assert len(batches) == 9 and all(x.dtype == np.float32 for x, _ in batches)
    for epoch in range(3):  # epochs 1, 2, 3 -> views 1, 0, 1; every row once an epoch
        x = np.concatenate([b[0] for b in batches[3 * epoch : 3 * epoch + 3]])
        y = np.concatenate([b[1] for b in batches[3 * epoch : 3 * epoch + 3]])
        assert np.all(x == (epoch + 1) % 2) and sorted(y) == [0, 1, 2, 3, 4]


def test_mixed_bfloat16_trains_the_blocks_in_bf16_and_ships_them_in_float32():
    """model.train_precision=bfloat16: the fresh top computes in bf16 with float32 weights (Keras'
    mixed_bfloat16; TensorFlow emulates bf16 on a CPU without BF16 units), the head's logits stay
    float32, and plain_copy ships every layer back in float32 with the trained weights."""
    pretrained = separable_top()
    top = fresh_top(pretrained, "mixed_bfloat16")
    sep1 = top.get_layer("sep1")
    assert sep1.dtype_policy.name == "mixed_bfloat16" and sep1.compute_dtype == "bfloat16"
    assert all(weight.dtype == "float32" for weight in top.weights)
    x = np.random.default_rng(0).normal(size=(8, 5, 5, 8)).astype(np.float32)
    low, exact = np.asarray(top(x), np.float32), np.asarray(pretrained(x))
    assert top(x).dtype == "bfloat16" and not np.array_equal(low, exact)  # bf16 arithmetic ran
    np.testing.assert_allclose(low, exact, rtol=0.05, atol=0.05)
    params = HeadParams(0.01, 4, 0.0, "none", blocks=1, block_lr=1.0)
    head = build_head((5, 5, 8), 3, params, seed=0, steps_per_epoch=1, top=top)
    assert head.output.dtype == "float32"
    history = head.fit(x, np.arange(8) % 3, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert not np.array_equal(top.get_layer("sep1").get_weights()[0], pretrained.get_layer("sep1").get_weights()[0])
    shipped = plain_copy(head)
    nested = [layer for model in (shipped, shipped.layers[1]) for layer in model.layers]
    assert {layer.dtype_policy.name for layer in nested} == {"float32"}
    np.testing.assert_allclose(np.asarray(shipped(x)), np.asarray(head(x)), rtol=0.05, atol=0.05)


def test_a_fine_tuning_search_trains_under_the_precision_the_cpu_offers(overrides, said):
    """train_precision=auto: mixed_bfloat16 on a CPU with BF16 units (forced here through
    model.cpu_features: TensorFlow emulates it where the CPU lacks them), float32 without."""
    flags = "model.cpu_features=[avx2,avx512f,avx512_bf16]"
    config = load_config([*overrides, *FINETUNE, "model.train_precision=auto", flags, "tuner.max_trials=1"])
    result = run_search(config)
    assert "Fine-tuned blocks train under mixed_bfloat16 (model.train_precision=auto)" in said
    client = MlflowClient(config.tracking.uri)
    assert client.get_run(result.parent_run_id).data.tags["train_precision"] == "mixed_bfloat16"
    (child,) = client.search_runs([result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert 0 <= child.data.metrics["val_accuracy"] <= 1
    said.clear()
    plain = load_config([*overrides, *FINETUNE, "model.train_precision=auto", "model.cpu_features=avx2"])
    run_search(plain)
    assert "Fine-tuned blocks train under float32 (model.train_precision=auto)" in said


def test_train_final_scores_and_checks_the_float32_model_it_ships_after_bf16_training(overrides):
    """Blocks trained under mixed_bfloat16 (what auto picks on a BF16 CPU; forced here, emulated on
    others) ship in float32: train-final selects and checks with those float32 heads, so the
    assembled model matches its reference as closely as after float32 training (float16 maps only)."""
    final = ["final.image_size=32", "final.epochs=2", "final.views=1", "final.restarts=1"]
    config = load_config([*overrides, *FINETUNE, *final, "model.train_precision=bfloat16", "tuner.max_trials=1"])
    run_search(config)
    shipped = train_final(config)
    assert shipped.hyperparameters.blocks == 1
    # float16 maps alone: 5e-6 here; checked against the bf16 heads the difference was 3e-4 (the code before)
    assert shipped.top1_agreement == 1.0 and shipped.max_abs_diff < 5e-5, shipped


def test_train_final_reuses_trials_trained_on_bf16_maps_and_ships_what_it_checked_on_fp32(overrides, said):
    """A search whose cut ran on OpenVINO bf16 (what auto takes where the check holds): train-final
    extracts fp32 maps (the shipped model's), confirms each reused trial on its own bf16 validation
    maps (read back from the cache: nothing extracted again, the score its trial logged), then
    selects and checks the shipped float32 model on fp32 (on a CPU without BF16 units OpenVINO runs
    f32 under the same name: the same path)."""
    recipe = ["search.augmentation.values=[none]", "tuner.patience=null", "final.patience=null"]
    final = ["final.image_size=32", "final.epochs=3", "final.restarts=1", "final.members=2", "final.ensemble=select"]
    config = load_config([*overrides, *FINETUNE, *recipe, *final, "model.runtime=openvino-bf16"])
    result = run_search(config)
    client = MlflowClient(config.tracking.uri)
    assert client.get_run(result.parent_run_id).data.tags["features_runtime"] == "openvino-bf16"
    shipped = train_final(config)
    assert any(line.startswith("Backbone runtime: onnx (model.runtime=openvino-bf16: using onnx") for line in said)
    reused = [line for line in said if "not trained again (final.reuse)" in line]
    assert len(reused) == 2 and all("on its openvino-bf16 features" in line for line in reused), said
    assert not any("Training the head" in line for line in said)
    assert shipped.top1_agreement == 1.0 and shipped.max_abs_diff < 5e-5  # checked against fp32's reference


def test_a_fine_tuning_search_then_final_model_then_onnx(overrides, capsys, said):
    """A search whose trials train the tiny backbone's top block on cached maps, then train-final
    carries the trained block into the one shipped model, checked on every validation photo, and
    export-onnx agrees with it."""
    final = ["final.image_size=32", "final.epochs=3", "final.views=2", "final.restarts=2"]
    config = load_config([*overrides, *FINETUNE, *final])
    result = run_search(config)
    assert result.best_hyperparameters["blocks"] == 1
    opened = [line for line in said if line.startswith("Backbone runtime")]
    assert opened and all("cut below the top 1 block(s)" in line for line in opened)  # no unused pooled backbone
    entries = [np.load(p, mmap_mode="r") for p in (Path(config.work_dir) / "features").glob("*.npy")]
    maps = [e for e in entries if e.ndim == 4]
    assert maps and all(e.dtype == np.float16 and e.shape[1:] == (15, 15, 8) for e in maps)
    client = MlflowClient(config.tracking.uri)
    children = client.search_runs(
        [result.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'", max_results=10
    )
    assert children and all(c.data.params["blocks"] == "1" for c in children)
    assert all("trial_seconds" in c.data.metrics for c in children)  # each trial's cost
    shipped = train_final(config)
    assert shipped.hyperparameters.blocks == 1
    assert shipped.top1_agreement == 1.0 and shipped.max_abs_diff < 1e-3  # float16 maps vs the float32 model
    # the shipped file holds Keras classes only (no BlockAdam, no MatmulSeparableConv2D): plain Keras loads it
    logged = client.get_logged_model(client.get_run(shipped.run_id).data.tags["fashion_exp.model_id"])
    saved = Path(logged.artifact_location.removeprefix("file://")) / "data" / "model.keras"
    with zipfile.ZipFile(saved) as archive:
        assert "fashion_exp" not in archive.read("config.json").decode()
    plain_keras = f"import keras; keras.saving.load_model({str(saved)!r}, compile=False)"
    assert subprocess.run([sys.executable, "-c", plain_keras], capture_output=True).returncode == 0
    capsys.readouterr()
    assert main(["export-onnx", "--model", "models:/fashion-classifier/1", *overrides, *final]) == 0
    assert "top-1 agreement 100.0%" in capsys.readouterr().out


TWO_CUTS = [
    "search=finetune",
    "tuner=grid",
    "tuner.max_trials=2",
    "search.blocks.values=[1,2]",
    "search.block_lr.values=[0.1]",
    "search.learning_rate.values=[0.01]",
    "search.size_inner.values=[10]",
    "search.droprate.values=[0.0]",
    "search.augmentation.values=[none]",
]


def test_heads_on_two_cuts_ship_in_one_model_that_computes_what_each_was_scored_on(overrides):
    """A head that fine-tuned one block and one that fine-tuned two, in one model: the frozen part
    runs to the deeper cut once, and the one-block head reads it through the frozen layers between
    (final/cuts.py). Checked as train-final checks, on every validation photo, against each head
    on its own cut's cached maps (float16 cache: 1e-3)."""
    from fashion_exp.final.ensemble import member_probabilities
    from fashion_exp.final.train import Shipped, assemble, check_assembled, open_features
    from fashion_exp.head.model import HeadInputs, new_head

    config = load_config([*overrides, "final.image_size=32"])
    members = [HeadParams(0.01, 10, 0.0, "none", blocks=1), HeadParams(0.01, 0, 0.0, "none", blocks=2)]
    features = open_features(config, members)
    heads, reference = [], []
    for index, params in enumerate(members):
        cut = features.of(params.blocks)
        inputs = HeadInputs(cut.backbone.feature_shape, cut.n_classes, 8, cut.top)
        heads.append(new_head(inputs, params, seed=index, train_rows=16))
        reference.append(member_probabilities([heads[-1]], cut.val)[0])
    mean = np.mean(reference, axis=0)
    shipped = Shipped(heads, [1, 2], None, None, mean)
    model, deepest = assemble(features, shipped)
    assert deepest.blocks == 2 and [layer.name for layer in model.layers if layer.name.startswith("head")] == [
        "head_0",
        "head_1",
    ]
    check = check_assembled(model, mean, deepest, config.model.batch_size)
    assert check.top1_agreement == 1.0 and check.max_abs_diff < 1e-3, check
    assert np.max(np.abs(reference[0] - reference[1])) > 1e-2  # (two heads that differ: the check could fail)


@pytest.mark.parametrize("ensemble", ["select", "mean"])
def test_train_final_takes_the_best_trials_whatever_blocks_they_trained(overrides, said, ensemble):
    """Every finished trial is a candidate for train-final's forward selection (issue 35): the
    members were the best trials that trained as many blocks as the best, so a two-block head
    could not join one-block ones. final.ensemble=mean ships both, equally weighed."""
    final = ["final.image_size=32", "final.epochs=3", "final.restarts=1", "final.members=2"]
    config = load_config([*overrides, *TWO_CUTS, *final, f"final.ensemble={ensemble}"])
    run_search(config)
    shipped = train_final(config)
    chosen = [line for line in said if line.startswith("Hyperparameters from tune run")]
    assert len(chosen) == 2 and {"'blocks': 1" in line for line in chosen} == {True, False}, chosen
    assert sum("restart 1 is the search's trial run" in line for line in said) == 2, said
    assert shipped.top1_agreement == 1.0 and shipped.max_abs_diff < 1e-3, shipped
    if ensemble == "mean":
        assert shipped.ensemble_size == 2 and any("2 head(s), the plain mean of every head" in line for line in said)
        weighed = [line for line in said if line.startswith("  member ")]
        assert len(weighed) == 2 and all(line.endswith("weight 0.50") for line in weighed), said


def test_a_search_the_disk_cannot_hold_is_refused_before_any_work(overrides, monkeypatch):
    monkeypatch.setattr("fashion_exp.features.features.shutil.disk_usage", lambda path: SimpleNamespace(free=1000))
    config = load_config([*overrides, *FINETUNE])
    with pytest.raises(UserError) as err:
        run_search(config)
    # sizes in the unit that shows them (it said "needs 0.00 GB more ... 0.00 GB free")
    assert re.search(r"need [0-9.]+ (KB|MB) more and the disk has 1 KB free", str(err.value)), err.value
    assert "\n" not in str(err.value)
    assert not list((Path(config.work_dir) / "features").glob("*.npy"))  # nothing extracted
    assert not MlflowClient(config.tracking.uri).search_experiments(filter_string="name = 'test'")  # no run


def test_the_disk_check_counts_every_entry_prepare_writes(overrides):
    """Validation, each policy's views, and (tuner.folds) the training photos un-augmented."""
    from fashion_exp.features.features import jobs_for, scan
    from fashion_exp.search.run import open_cut, search_policies

    config = load_config([*overrides, *FINETUNE, "search.augmentation.values=[none,shear_zoom_flip]"])
    features = open_cut(config, scan(config.data, config.work_dir), 1)
    policies = search_policies(config)

    def missing_bytes(policies, clean_train=False):
        return features.missing_bytes(jobs_for(policies, clean_train))

    size, splits = bytes_per_image(features.backbone.feature_shape), features.dataset.splits
    n_train, n_val = len(splits["train"]), len(splits["validation"])
    views = sum(p.views for p in policies.values())
    assert missing_bytes(policies) == size * (n_val + n_train * views)
    assert missing_bytes(policies, clean_train=True) == size * (n_val + n_train * views)  # none's
    assert missing_bytes({"szf": policies["shear_zoom_flip"]}, clean_train=True) == size * (
        n_val + n_train * (1 + policies["shear_zoom_flip"].views)
    )
    features.get(jobs_for(policies))
    assert missing_bytes(policies, clean_train=True) == 0


def test_no_trial_starts_after_the_time_budget(overrides, monkeypatch):
    clock = iter([0.0, 0.0, 1000.0, 1000.0, 1000.0])  # budget set, trial 1 asked for, trial 2 asked for...
    monkeypatch.setattr(oracles, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    result = run_search(load_config([*overrides, "tuner.max_trials=3", "tuner.max_minutes=1"]))
    assert result.trials == 1


def test_a_tuner_is_made_without_building_a_head(tmp_path):
    """keras-tuner builds the model once per conditional scope to learn the space; ours declares the
    space instead, so making the tuner of a blocks {0, 1} search touches no features: a cut's
    activation maps are prepared when the first trial that needs them starts, not before."""

    class NoFeatures(dict):
        def __getitem__(self, blocks):
            raise AssertionError(f"features of blocks={blocks} asked for while making the tuner")

    config = load_config(["search=finetune", "search.blocks.values=[0,1]", "tuner=grid"])
    hypermodel = HeadHyperModel(config.search, NoFeatures(), {}, 8, 8, seed=1)
    tuner = tuner_module.make_tuner(config.tuner, hypermodel, tmp_path, "p", 1, True, observers=[])
    conditions = {p.name: [c.get_config() for c in p.conditions] for p in tuner.oracle.get_space().space}
    assert conditions["block_lr"] == [{"name": "blocks", "values": [1]}]
