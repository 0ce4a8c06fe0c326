"""model.runtime: the backbone on TensorFlow, ONNX fp32 and ONNX int8 (tiny backbone, synthetic photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashion_exp.config import load_config
from fashion_exp.features import onnx_files, runtime
from fashion_exp.features.backbone import build_backbone
from fashion_exp.features.onnx_files import Calibration
from fashion_exp.features.runtime import open_runner, resolve

IMAGES = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(load_config(["model=tiny"]).model, 32, seed=1)


def calibration(identity="photos-a"):
    return Calibration(identity, lambda: np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))


def test_auto_is_int8_for_the_search_and_fp32_where_the_shipped_model_must_match(monkeypatch):
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    assert resolve("auto", exact=False) == "onnx-int8"
    assert resolve("auto", exact=True) == "onnx"
    assert resolve("onnx-int8", exact=True) == "onnx"  # train-final never trains on int8 features
    assert resolve("tensorflow", exact=True) == "tensorflow"
    monkeypatch.setattr(runtime, "gpu_visible", lambda: True)
    assert resolve("auto", exact=False) == "tensorflow"


@pytest.mark.parametrize(
    "gpu, exact, expected", [(False, False, "onnx-int8"), (False, True, "onnx"), (True, False, "tensorflow")]
)
def test_every_runtime_auto_can_pick_extracts_features(backbone, tmp_path, monkeypatch, gpu, exact, expected):
    """Each path of model.runtime=auto run end to end: ONNX export, int8 quantization with ONNX
    Runtime's preprocessing (which needs sympy), fp32 ONNX, TensorFlow. A dependency the lock lacks
    fails here, in CI's new environment, instead of in a user's first `tune`."""
    monkeypatch.setattr(runtime, "gpu_visible", lambda: gpu)
    chosen = resolve("auto", exact=exact)
    assert chosen == expected
    features = open_runner(backbone, chosen, 8, tmp_path, calibration()).features(IMAGES)
    reference = open_runner(backbone, "tensorflow", 8, tmp_path).features(IMAGES)
    assert features.shape == reference.shape and np.isfinite(features).all()
    cosines = (features * reference).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() > 0.9  # int8 is close, fp32 equal


def test_onnx_fp32_features_equal_tensorflow(backbone, tmp_path):
    expected = open_runner(backbone, "tensorflow", 8, tmp_path).features(IMAGES)
    got = open_runner(backbone, "onnx", 8, tmp_path).features(IMAGES)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert list((tmp_path / "backbones").glob("*.onnx"))  # exported once into work_dir


def test_int8_is_made_once_and_its_fingerprint_names_the_calibration(backbone, tmp_path, monkeypatch):
    first = open_runner(backbone, "onnx-int8", 8, tmp_path, calibration())
    features = first.features(IMAGES)
    assert features.shape == (5, backbone.dim)
    assert np.isfinite(features).all()

    def fail(*_):
        raise AssertionError("quantized twice")

    monkeypatch.setattr(onnx_files, "quantize", fail)
    again = open_runner(backbone, "onnx-int8", 8, tmp_path, calibration())
    np.testing.assert_array_equal(again.features(IMAGES), features)  # the file from the first run
    names = {open_runner(backbone, name, 8, tmp_path, calibration()).fingerprint for name in ("tensorflow", "onnx")} | {
        first.fingerprint,
        open_runner(backbone, "onnx-int8", 8, tmp_path, calibration("photos-b")).fingerprint,
    }
    assert len(names) == 4  # every runtime and calibration caches its own features
    assert open_runner(backbone, "tensorflow", 8, tmp_path).fingerprint == backbone.fingerprint


def test_an_int8_file_without_its_cosine_record_is_measured_again_not_refused(backbone, tmp_path, monkeypatch):
    """A work_dir from a version that kept no record beside the int8 file: auto must not read that
    as 'int8 does not hold' (nan) but measure, keep the record, and not quantize again."""
    runner = open_runner(backbone, "onnx-int8", 8, tmp_path, calibration())
    cosine = runner.files.int8_cosine(backbone, runner.calibration)
    record = next((tmp_path / "backbones").glob("*int8*.json"))
    record.unlink()
    monkeypatch.setattr(onnx_files, "quantize", lambda *_: pytest.fail("quantized again"))
    assert runner.files.int8_cosine(backbone, runner.calibration) == pytest.approx(cosine, abs=1e-6)
    assert record.is_file() and np.isfinite(cosine)


def test_an_int8_backbone_whose_features_left_fp32s_is_refused_and_not_kept(backbone, tmp_path, monkeypatch):
    from fashion_exp.errors import UserError

    real = onnx_files.cosine
    monkeypatch.setattr(onnx_files, "INT8_MIN_COSINE", 1.01)  # no quantized file reaches it
    runner = open_runner(backbone, "onnx-int8", 8, tmp_path, calibration())
    with pytest.raises(UserError, match=r"not fp32's \(mean cosine \d\.\d+ < 1\.01.*pass model.runtime=onnx$"):
        runner.features(IMAGES)
    assert not list((tmp_path / "backbones").glob("*int8*"))  # nothing half-made is left
    monkeypatch.setattr(onnx_files, "INT8_MIN_COSINE", 0.9)
    cosines = []
    monkeypatch.setattr(onnx_files, "cosine", lambda *a, **k: cosines.append(real(*a, **k)) or cosines[-1])
    assert open_runner(backbone, "onnx-int8", 8, tmp_path, calibration()).features(IMAGES).shape == (5, backbone.dim)
    assert 0.9 <= cosines[0] <= 1.0 + 1e-6


def test_a_damaged_onnx_file_is_made_again(backbone, tmp_path):
    runner = open_runner(backbone, "onnx", 8, tmp_path)
    expected = runner.features(IMAGES)
    (path,) = (tmp_path / "backbones").glob("*.onnx")
    path.write_bytes(b"not an onnx file")
    np.testing.assert_allclose(open_runner(backbone, "onnx", 8, tmp_path).features(IMAGES), expected, atol=1e-6)


def test_int8_without_calibration_photos_is_refused(backbone, tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        open_runner(backbone, "onnx-int8", 8, tmp_path)


def test_calibration_photos_spread_over_the_split():
    assert onnx_files.spread(3068) == sorted(set(onnx_files.spread(3068)))
    assert len(onnx_files.spread(3068)) == onnx_files.CALIBRATION_PHOTOS
    assert onnx_files.spread(3068)[0] == 0 and onnx_files.spread(3068)[-1] == 3067
    assert onnx_files.spread(5) == [0, 1, 2, 3, 4]


def test_a_search_on_int8_features_then_a_final_model_on_exact_ones(overrides, monkeypatch):
    """The search may run int8; train-final trains the shipped head on the features the shipped
    Keras model computes (fp32), so the assembled model matches its cached-feature head."""
    from mlflow.tracking import MlflowClient

    from fashion_exp.final.train import train_final
    from fashion_exp.search.run import run_search

    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=onnx-int8", "tuner.max_trials=1", "tuner.epochs=2"])
    said = []
    search = run_search(config, echo=said.append)
    assert "Backbone runtime: onnx-int8 (model.runtime=onnx-int8)" in said
    client = MlflowClient(config.tracking.uri)
    parent = client.get_run(search.parent_run_id)
    assert parent.data.tags["features_runtime"] == "onnx-int8"
    assert "+onnx-int8-" in parent.data.tags["weights_fingerprint"]
    assert len(list(Path(config.work_dir, "backbones").glob("*-int8-*.onnx"))) == 1
    final_config = load_config([*overrides, "model.runtime=onnx-int8", "final.image_size=32", "final.epochs=2"])
    said.clear()
    result = train_final(final_config, echo=said.append)
    assert any("using onnx, whose features equal the shipped Keras model's" in line for line in said)
    assert client.get_run(result.run_id).data.params["features_runtime"] == "onnx"
    assert result.max_abs_diff < 1e-4 and result.top1_agreement == 1.0


def test_auto_extracts_in_fp32_where_int8_features_are_not_close_enough(overrides, monkeypatch, capsys):
    from fashion_exp.features.features import scan
    from fashion_exp.search.run import open_cut

    def open_sources(config, echo):
        return open_cut(config, scan(config.data, config.work_dir, echo), 0, echo).extractor

    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=auto"])
    said = []
    assert open_sources(config, echo=said.append).runner.runtime == "onnx-int8"  # tiny: cosine ~1
    config = load_config([*overrides, "model.runtime=auto", "model.auto_int8_min_cosine=1.01"])
    said.clear()
    sources = open_sources(config, echo=said.append)
    assert sources.runner.runtime == "onnx"
    assert any("(< 1.01): model.runtime=auto extracts with onnx (fp32) here" in line for line in said)
    assert "Backbone runtime: onnx (model.runtime=auto)" in said
    explicit = open_sources(load_config([*overrides, "model.runtime=onnx-int8"]), echo=said.append)
    assert explicit.runner.runtime == "onnx-int8"  # asked for by name: kept
