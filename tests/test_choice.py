"""model.runtime=auto on a CPU: the fastest runtime whose features pass the check on this machine
(tiny backbone, synthetic photos; the CPU's flags forced through model.cpu_features)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fashion_exp.config import load_config
from fashion_exp.features import choice, runtime
from fashion_exp.features.choice import Measured, agreement, pick

BF16_VNNI = "model.cpu_features=[avx2,avx512f,avx512_bf16,avx512_vnni]"


def open_extractor(config, said):
    from fashion_exp.features.features import scan
    from fashion_exp.search.run import open_cut

    return open_cut(config, scan(config.data, config.work_dir, said.append), 0, said.append).extractor


def model_config(*overrides):
    return load_config(["model=tiny", *overrides]).model


def row(name, speed, cosine=1.0, agree=1.0, error=""):
    return Measured(name, "f32", speed, cosine, agree, error)


def test_pick_takes_the_fastest_runtime_that_passes_and_beats_fp32():
    model = model_config()
    fp32 = row("onnx", 10.0)
    rows = [fp32, row("onnx-int8", 30.0, cosine=0.96), row("openvino-bf16", 20.0, cosine=0.9999, agree=1.0)]
    chosen, why = pick(rows, model)
    assert chosen == "openvino-bf16"  # int8 is faster but its features left fp32's
    assert why == "openvino-bf16 passes (2.00x fp32, cosine 0.9999, agreement 1.000)"
    assert pick([fp32, row("onnx-int8", 30.0, agree=0.99)], model)[0] == "onnx"  # one photo in 100 changed its class
    assert pick([fp32, row("onnx-int8", 9.0)], model)[0] == "onnx"  # passes, but slower than fp32 here
    assert pick([fp32, row("onnx-int8", 0.0, error="refused")], model)[0] == "onnx"
    assert pick([fp32, row("onnx-int8", 30.0), row("openvino-bf16", 20.0)], model)[0] == "onnx-int8"


def test_the_check_head_agrees_with_itself_and_not_with_noise():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 64))
    labels = np.repeat(np.arange(3), 20)
    train = centers[labels] + rng.normal(scale=0.5, size=(60, 64))
    val = centers[labels] + rng.normal(scale=0.5, size=(60, 64))
    assert agreement(train, labels, val, val) == 1.0
    assert agreement(train, labels, val, val + rng.normal(scale=0.01, size=val.shape)) == 1.0
    assert agreement(train, labels, val, rng.normal(size=val.shape)) < 0.6


def test_auto_measures_once_per_cpu_and_extracts_with_what_passed(overrides, monkeypatch):
    """A CPU told it has BF16 and VNNI: auto measures fp32 ONNX, int8 and OpenVINO bf16 on the check
    photos, keeps the record, says which it took and why; a second start reads the record."""
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=auto", BF16_VNNI])
    said = []
    extractor = open_extractor(config, said)
    (record,) = Path(config.work_dir, "backbones").glob("auto-*.json")
    measured = [Measured(**line) for line in json.loads(record.read_text())["measured"]]
    assert [line.runtime for line in measured] == ["onnx", "onnx-int8", "openvino-bf16"]
    assert all(line.images_per_s > 0 and 0.9 < line.cosine <= 1 + 1e-6 for line in measured)
    expected, why = pick(measured, config.model)
    assert extractor.runner.runtime == expected
    line = next(line for line in said if line.startswith("Backbone runtime: "))
    assert line.startswith(f"Backbone runtime: {expected} (auto: ")
    assert "on this CPU with BF16 and VNNI (avx2+avx512_bf16+avx512_vnni+avx512f; from model.cpu_features)" in line
    verdicts = [line for line in said if line.startswith("  ") and ("fails the check" in line or "passes (" in line)]
    assert len(verdicts) == 2  # one a candidate

    monkeypatch.setattr(choice, "measure", lambda *_: pytest.fail("measured again"))
    said.clear()
    assert open_extractor(config, said).runner.runtime == expected
    assert not any(line.startswith("Measuring") for line in said)


def test_auto_falls_back_to_fp32_when_nothing_passes_and_measures_again_on_another_cpu(overrides, monkeypatch):
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    said = []
    config = load_config([*overrides, "model.runtime=auto", "model.cpu_features=avx2", "model.auto_min_cosine=1.01"])
    assert open_extractor(config, said).runner.runtime == "onnx"
    assert any("onnx-int8 fails the check (" in line for line in said)
    assert any(
        line.startswith("Backbone runtime: onnx (auto: fp32 ONNX, no faster runtime keeps its features on this CPU")
        for line in said
    )
    assert not any("openvino" in line for line in said)  # no BF16 units: not even tried
    open_extractor(load_config([*overrides, "model.runtime=auto", BF16_VNNI]), said)
    assert len(list(Path(config.work_dir, "backbones").glob("auto-*.json"))) == 2  # another CPU: its own record


def test_a_damaged_record_is_measured_again(overrides, monkeypatch):
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=auto", "model.cpu_features=avx2"])
    open_extractor(config, [])
    (record,) = Path(config.work_dir, "backbones").glob("auto-*.json")
    record.write_text('{"measured": [{"runtime": ')
    said = []
    open_extractor(config, said)
    assert any(line.startswith("Measuring 2 backbone runtimes") for line in said)
    assert json.loads(record.read_text())["measured"][0]["runtime"] == "onnx"


def test_explicit_runtimes_and_fine_tuning_cuts_are_not_measured(overrides, monkeypatch):
    from fashion_exp.features.features import scan
    from fashion_exp.search.run import open_cut

    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    monkeypatch.setattr(choice, "measure", lambda *_: pytest.fail("measured"))
    said = []
    config = load_config([*overrides, "model.runtime=onnx-int8"])
    assert open_extractor(config, said).runner.runtime == "onnx-int8"  # asked for by name: kept
    config = load_config([*overrides, "model.runtime=auto"])
    cut = open_cut(config, scan(config.data, config.work_dir, said.append), 1, said.append)
    assert cut.runtime == "onnx"
    why = "auto: fp32 ONNX, the shipped Keras model's features"
    assert f"Backbone runtime: onnx ({why}), cut below the top 1 block(s)" in said
