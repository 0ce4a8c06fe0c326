"""model.runtime: the backbone on TensorFlow, ONNX fp32 and int8, OpenVINO f32 and bf16 (tiny backbone)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fashion_exp import hardware
from fashion_exp.config import load_config
from fashion_exp.features import onnx_files, runtime
from fashion_exp.features.backbone import build_backbone
from fashion_exp.features.onnx_files import Calibration
from fashion_exp.features.runtime import open_runner, resolve
from fashion_exp.hardware import Cpu

IMAGES = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def backbone():
    return build_backbone(load_config(["model=tiny"]).model, 32, seed=1)


def calibration(identity="photos-a", min_cosine=0.9):
    load = lambda: np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)  # noqa: E731
    return Calibration(identity, load, 32, min_cosine)


AVX2 = Cpu(frozenset({"avx2"}))
BF16_VNNI = Cpu(frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}), forced=True)


def test_lower_precision_candidates_follow_the_cpu():
    assert runtime.lower_precision(AVX2) == ["onnx-int8"]  # no BF16 units: OpenVINO would run f32
    assert runtime.lower_precision(BF16_VNNI) == ["onnx-int8", "openvino-bf16"]
    assert resolve("onnx-int8", exact=True) == "onnx"  # train-final never trains on lower-precision features
    assert resolve("openvino-bf16", exact=True) == "onnx"
    assert resolve("openvino", exact=True) == "openvino" and resolve("tensorflow", exact=True) == "tensorflow"


@pytest.mark.parametrize("name", ["tensorflow", "onnx", "onnx-int8", "openvino", "openvino-bf16"])
def test_every_runtime_extracts_features(backbone, tmp_path, name):
    """Each model.runtime run end to end on this CPU: ONNX export, int8 quantization with ONNX
    Runtime's preprocessing (which needs sympy), OpenVINO's CPU plugin at a pinned precision. A
    dependency the lock lacks fails here, in CI's new environment, instead of in a user's first `tune`."""
    features = open_runner(backbone, name, 8, tmp_path, calibration()).features(IMAGES)
    reference = open_runner(backbone, "tensorflow", 8, tmp_path).features(IMAGES)
    assert features.shape == reference.shape and features.dtype == np.float32 and np.isfinite(features).all()
    cosines = (features * reference).sum(1) / np.linalg.norm(features, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() > (0.99 if name in runtime.EXACT else 0.9)  # lower precision is close, fp32 equal


def test_openvino_runs_the_precision_it_is_pinned_to_and_says_when_the_cpu_cannot(backbone, tmp_path, said):
    """f32 is pinned (OpenVINO's CPU default is bf16 where the CPU has it); bf16 asked of a CPU
    without BF16 units runs f32, and the runner says so instead of claiming bf16."""
    fp32 = open_runner(backbone, "openvino", 8, tmp_path)
    np.testing.assert_allclose(
        fp32.features(IMAGES), open_runner(backbone, "onnx", 8, tmp_path).features(IMAGES), atol=1e-4
    )
    assert fp32.precision == "f32" and not said
    bf16 = open_runner(backbone, "openvino-bf16", 8, tmp_path, cpu=BF16_VNNI)
    bf16.features(IMAGES)
    if hardware.cpu_of().bf16:  # the real path on whatever CPU runs this
        assert bf16.precision == "bf16" and not said
    else:
        assert bf16.precision == "f32"
        assert said == [
            "openvino-bf16: OpenVINO's CPU plugin runs f32 on this CPU, not bf16 (it has no BF16 units): "
            "the features are fp32's, at fp32's speed"
        ]
    assert bf16.fingerprint.endswith("+openvino-bf16-avx2+avx512_bf16+avx512_vnni+avx512f")


def test_the_int8_recipe_uses_full_range_weights_on_a_cpu_with_vnni(backbone, tmp_path, monkeypatch):
    """Without VNNI, int8 weights keep reduce_range (and the key existing work folders hold); with
    it, full-range weights, another file and another cache key."""
    ranges = []
    real = onnx_files.quantize
    monkeypatch.setattr(onnx_files, "quantize", lambda *a, **k: ranges.append(k["reduce_range"]) or real(*a, **k))
    plain = open_runner(backbone, "onnx-int8", 8, tmp_path, calibration(), cpu=AVX2)
    vnni = open_runner(backbone, "onnx-int8", 8, tmp_path, calibration(), cpu=BF16_VNNI)
    assert plain.features(IMAGES).shape == vnni.features(IMAGES).shape
    assert ranges == [True, False]
    assert plain.fingerprint != vnni.fingerprint
    assert len(list((tmp_path / "backbones").glob("*-int8-*.onnx"))) == 2
    import onnxruntime

    old_recipe = {  # the recipe's key before CPUs were told apart: AVX2 work folders keep their int8 files
        "calibration": "photos-a",
        "photos": 32,  # model.int8_calibration_photos
        "keep_float": onnx_files.KEEP_FLOAT,
        "method": "minmax-qdq-per-channel-reduce-range",
        "onnxruntime": onnxruntime.__version__,
    }
    assert plain.fingerprint.endswith(hashlib.sha256(json.dumps(old_recipe, sort_keys=True).encode()).hexdigest()[:12])


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
    cosine = runner.files.int8_cosine(backbone, runner.calibration, runner.cpu)
    record = next((tmp_path / "backbones").glob("*int8*.json"))
    record.unlink()
    monkeypatch.setattr(onnx_files, "quantize", lambda *_: pytest.fail("quantized again"))
    assert runner.files.int8_cosine(backbone, runner.calibration, runner.cpu) == pytest.approx(cosine, abs=1e-6)
    assert record.is_file() and np.isfinite(cosine)


def test_an_int8_backbone_whose_features_left_fp32s_is_refused_and_not_kept(backbone, tmp_path, monkeypatch):
    from fashion_exp.errors import UserError

    real = onnx_files.cosine
    runner = open_runner(backbone, "onnx-int8", 8, tmp_path, calibration(min_cosine=1.01))  # no int8 file reaches it
    with pytest.raises(UserError, match=r"not fp32's \(mean cosine \d\.\d+ < 1\.01.*pass model.runtime=onnx$"):
        runner.features(IMAGES)
    assert not list((tmp_path / "backbones").glob("*int8*"))  # nothing half-made is left
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
    assert onnx_files.spread(3068, 32) == sorted(set(onnx_files.spread(3068, 32)))
    assert len(onnx_files.spread(3068, 32)) == 32
    assert onnx_files.spread(3068, 32)[0] == 0 and onnx_files.spread(3068, 32)[-1] == 3067
    assert onnx_files.spread(5, 32) == [0, 1, 2, 3, 4]


def test_a_search_on_int8_features_then_a_final_model_on_exact_ones(overrides, monkeypatch, said):
    """The search may run int8; train-final trains the shipped head on the features the shipped
    Keras model computes (fp32), so the assembled model matches its cached-feature head."""
    from mlflow.tracking import MlflowClient

    from fashion_exp.final.train import train_final
    from fashion_exp.search.run import run_search

    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=onnx-int8", "tuner.max_trials=1", "tuner.epochs=2"])
    search = run_search(config)
    assert "Backbone runtime: onnx-int8 (model.runtime=onnx-int8)" in said
    client = MlflowClient(config.tracking.uri)
    parent = client.get_run(search.parent_run_id)
    assert parent.data.tags["features_runtime"] == "onnx-int8"
    assert "+onnx-int8-" in parent.data.tags["weights_fingerprint"]
    assert len(list(Path(config.work_dir, "backbones").glob("*-int8-*.onnx"))) == 1
    final_config = load_config([*overrides, "model.runtime=onnx-int8", "final.image_size=32", "final.epochs=2"])
    said.clear()
    result = train_final(final_config)
    assert any("using onnx, whose features equal the shipped Keras model's" in line for line in said)
    assert client.get_run(result.run_id).data.params["features_runtime"] == "onnx"
    assert result.max_abs_diff < 1e-4 and result.top1_agreement == 1.0


def test_a_stop_signal_after_openvino_was_used_still_stops_cleanly(tmp_path):
    """OpenVINO's CPU plugin points the main thread's signal stack (sigaltstack) into its own
    memory: with two compiled backbones alive at once and released, it was left pointing at freed
    memory and the next SIGTERM crashed the process (segmentation fault, exit -11) instead of
    raising Terminated. A real signal, in a process of its own."""
    script = f"""
import faulthandler, gc, os, signal, time
faulthandler.enable()  # as pytest does: a signal stack of its own, which the plugin replaces
import numpy as np
from fashion_exp import signals
from fashion_exp.config import load_config
from fashion_exp.features.backbone import build_backbone
from fashion_exp.features.runtime import open_runner

backbone = build_backbone(load_config(["model=tiny"]).model, 32, seed=1)

def extract():
    runners = [open_runner(backbone, name, 8, {str(tmp_path)!r}) for name in ("openvino", "openvino-bf16")]
    for runner in runners:
        runner.features(np.zeros((2, 32, 32, 3), np.uint8))

extract()
gc.collect()
with signals.as_interrupts():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    except signals.Terminated:
        print("stopped cleanly")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "stopped cleanly" in done.stdout, (done.returncode, done.stderr[-1500:])
