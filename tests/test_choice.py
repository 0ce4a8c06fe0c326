"""model.runtime=auto on a CPU: the fastest runtime whose features pass the check on this machine
(tiny backbone, synthetic photos; the CPU's flags forced through model.cpu_features)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fashion_exp.config import load_config
from fashion_exp.features import choice, runtime
from fashion_exp.features.choice import Measured, Record, head_predictions, pick

BF16_VNNI = "model.cpu_features=[avx2,avx512f,avx512_bf16,avx512_vnni]"


def open_extractor(config):
    from fashion_exp.features.features import scan
    from fashion_exp.search.run import open_cut

    return open_cut(config, scan(config.data, config.work_dir), 0).extractor


def model_config(*overrides):
    return load_config(["model=tiny", *overrides]).model


LABELS = [i % 10 for i in range(341)]
FP32 = [(c + 1) % 10 if i < 30 else c for i, c in enumerate(LABELS)]  # 30 of 341 wrong


def classes(lost: int = 0, changed: int = 0) -> list[int]:
    """fp32's classes with `lost` right photos turned wrong and `changed` wrong ones given another wrong class."""
    got = list(FP32)
    for i in range(30, 30 + lost):
        got[i] = (LABELS[i] + 2) % 10
    for i in range(changed):
        got[i] = (LABELS[i] + 3) % 10
    return got


def row(name, speed, cosine=1.0, predicted=None, error=""):
    return Measured(name, "f32", speed, cosine, FP32 if predicted is None else predicted, error)


def test_pick_takes_the_fastest_runtime_that_keeps_accuracy_and_beats_fp32():
    model = model_config()
    fp32 = row("onnx", 10.0)

    def picked(*rows):
        return pick(Record(LABELS, [fp32, *rows]), model)

    chosen, why = picked(row("onnx-int8", 30.0, cosine=0.96), row("openvino-bf16", 20.0, 0.9999, classes(lost=1)))
    assert chosen == "openvino-bf16"  # int8 is faster but its features left fp32's; bf16 lost 1 photo of 341: holds
    assert why.startswith("openvino-bf16 passes (2.00x fp32, cosine 0.9999, accuracy 0.9091 vs 0.9120 on 341 photos")
    assert picked(row("onnx-int8", 30.0, predicted=classes(lost=6)))[0] == "onnx"  # 1.8 points lost
    assert picked(row("onnx-int8", 30.0, predicted=classes(changed=30)))[0] == "onnx"  # 8.8% changed class
    assert picked(row("onnx-int8", 9.0))[0] == "onnx"  # passes, but slower than fp32 here
    assert picked(row("onnx-int8", 0.0, predicted=[], error="refused"))[0] == "onnx"
    assert picked(row("onnx-int8", 30.0), row("openvino-bf16", 20.0))[0] == "onnx-int8"
    few = [Measured(name, "f32", speed, 1.0, FP32[:100]) for name, speed in (("onnx", 10.0), ("openvino-bf16", 20.0))]
    assert pick(Record(LABELS[:100], few), model)[0] == "onnx"  # nothing changed, but 100 photos cannot show 1.5 points


def test_the_check_heads_predict_alike_on_alike_features_and_not_on_noise():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 64))
    labels = np.repeat(np.arange(3), 20)
    train = centers[labels] + rng.normal(scale=0.5, size=(60, 64))
    val = centers[labels] + rng.normal(scale=0.5, size=(60, 64))
    truth = head_predictions(train, labels, val)
    assert np.mean(np.asarray(truth) == labels) > 0.9
    nudged = head_predictions(train + rng.normal(scale=0.01, size=train.shape), labels, val)
    assert nudged == truth
    assert np.mean(np.asarray(head_predictions(rng.normal(size=train.shape), labels, val)) == labels) < 0.6


def test_auto_measures_once_per_cpu_and_extracts_with_what_passed(overrides, monkeypatch, said):
    """A CPU told it has BF16 and VNNI: auto measures fp32 ONNX, int8 and OpenVINO bf16 on the check
    photos, keeps the record, says which it took and why; a second start reads the record."""
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=auto", BF16_VNNI])
    extractor = open_extractor(config)
    (record,) = Path(config.work_dir, "backbones").glob("auto-*.json")
    saved = json.loads(record.read_text())
    measured = [Measured(**line) for line in saved["measured"]]
    assert [line.runtime for line in measured[1:]] == ["onnx-int8", "openvino-bf16"]
    assert measured[0].runtime in ("onnx", "openvino")  # the faster fp32 here is the reference
    assert all(line.images_per_s > 0 and 0.9 < line.cosine <= 1 + 1e-6 for line in measured)
    assert all(len(line.predicted) == len(saved["labels"]) for line in measured)  # every validation photo
    expected, why = pick(Record(saved["labels"], measured), config.model)
    assert extractor.runner.runtime == expected
    line = next(line for line in said if line.startswith("Backbone runtime: "))
    assert line.startswith(f"Backbone runtime: {expected} (auto: ")
    assert "on this CPU with BF16 and VNNI (avx2+avx512_bf16+avx512_vnni+avx512f; from model.cpu_features)" in line
    verdicts = [line for line in said if line.startswith("  ") and ("fails the check" in line or "passes (" in line)]
    assert len(verdicts) == 2  # one a candidate

    monkeypatch.setattr(choice, "measure", lambda *_: pytest.fail("measured again"))
    said.clear()
    assert open_extractor(config).runner.runtime == expected
    assert not any(line.startswith("Measuring") for line in said)


def test_auto_falls_back_to_fp32_when_nothing_passes_and_measures_again_on_another_cpu(overrides, monkeypatch, said):
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=auto", "model.cpu_features=avx2", "model.auto_min_cosine=1.01"])
    reference = open_extractor(config).runner.runtime
    assert reference in ("onnx", "openvino")
    assert any("onnx-int8 fails the check (" in line for line in said)
    assert any(
        line.startswith(
            f"Backbone runtime: {reference} (auto: fp32 {reference}, no faster runtime keeps its accuracy on this CPU"
        )
        for line in said
    )
    assert not any("openvino-bf16" in line for line in said)  # no BF16 units: not even tried
    open_extractor(load_config([*overrides, "model.runtime=auto", BF16_VNNI]))
    assert len(list(Path(config.work_dir, "backbones").glob("auto-*.json"))) == 2  # another CPU: its own record


def test_a_damaged_record_is_measured_again(overrides, monkeypatch, said):
    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=auto", "model.cpu_features=avx2"])
    open_extractor(config)
    (record,) = Path(config.work_dir, "backbones").glob("auto-*.json")
    record.write_text('{"measured": [{"runtime": ')
    open_extractor(config)
    assert any(line.startswith("Measuring 2 backbone runtimes") for line in said)
    assert json.loads(record.read_text())["measured"][0]["runtime"] in ("onnx", "openvino")


def test_the_fastest_fp32_runtime_is_the_reference_timed_once(overrides, monkeypatch, said):
    """OpenVINO f32 where it runs faster than ONNX Runtime on this CPU: the fine-tuning cut (fp32
    on a CPU without BF16 units) runs on it; the race is kept and read on the next start."""
    from fashion_exp.features.features import scan
    from fashion_exp.search.run import open_cut

    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    speeds = {"onnx": 10.0, "openvino": 13.0}
    monkeypatch.setattr(choice, "batch_rate", lambda runner, images, batch: speeds[runner.runtime])
    config = load_config([*overrides, "model.runtime=auto", "model.cpu_features=avx2"])
    cut = open_cut(config, scan(config.data, config.work_dir), 1)
    assert cut.runtime == "openvino"
    assert any("(auto: the fastest fp32 here (images/s: openvino 13.0, onnx 10.0)" in line for line in said)
    monkeypatch.setattr(choice, "batch_rate", lambda *_: pytest.fail("timed again"))
    assert open_cut(config, scan(config.data, config.work_dir), 1).runtime == "openvino"


def test_explicit_runtimes_are_not_measured_and_a_cut_never_runs_int8(overrides, monkeypatch, said):
    from fashion_exp.features.features import scan
    from fashion_exp.search.run import open_cut

    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    monkeypatch.setattr(choice, "measure", lambda *_: pytest.fail("measured"))
    config = load_config([*overrides, "model.runtime=onnx-int8"])
    assert open_extractor(config).runner.runtime == "onnx-int8"  # asked for by name: kept
    cut = open_cut(config, scan(config.data, config.work_dir), 1)
    assert cut.runtime == "onnx"  # int8 maps are not what a fine-tuned block trains on
    assert "using onnx, whose features a fine-tuned block trains on), cut below the top 1 block(s)" in said[-2]
    config = load_config([*overrides, "model.runtime=auto", "model.cpu_features=avx2"])
    cut = open_cut(config, scan(config.data, config.work_dir), 1)
    assert cut.runtime in ("onnx", "openvino")  # no BF16 units: fp32, the faster of the two here, timed once
    line = next(line for line in said if line.startswith(f"Backbone runtime: {cut.runtime} (auto: the fastest fp32"))
    assert line.endswith("a cut runs bf16 only on a CPU with BF16 units), cut below the top 1 block(s)")


def test_a_fine_tuning_cut_runs_bf16_where_the_check_on_its_maps_holds(overrides, monkeypatch, said):
    """On a CPU with BF16 units (forced), auto checks bf16 alone on the cut's activation maps (int8
    is never a cut's candidate; the check heads pool the maps) and extracts the cut on bf16 when it
    passes; a verdict that fails keeps fp32. The first check is real, on the tiny backbone."""
    from fashion_exp.features.features import scan
    from fashion_exp.search.run import open_cut

    monkeypatch.setattr(runtime, "gpu_visible", lambda: False)
    config = load_config([*overrides, "model.runtime=auto", BF16_VNNI])
    cut = open_cut(config, scan(config.data, config.work_dir), 1)
    (record,) = Path(config.work_dir, "backbones").glob("auto-*.json")
    saved = json.loads(record.read_text())
    measured = [Measured(**line) for line in saved["measured"]]
    assert [line.runtime for line in measured[1:]] == ["openvino-bf16"]
    assert all(len(line.predicted) == len(saved["labels"]) for line in measured)
    assert cut.runtime == pick(Record(saved["labels"], measured), config.model)[0]

    def measured_as(verdict):
        def fake(reference, candidates, photos, batch_size):
            assert [runner.runtime for runner in candidates] == ["openvino-bf16"]
            assert reference.backbone.blocks == candidates[0].backbone.blocks == 1  # the cut itself
            return LABELS, [row(reference.runtime, 10.0), Measured("openvino-bf16", "bf16", 30.0, 0.9999, verdict)]

        return fake

    for flags, verdict, expected in (
        ("avx512_bf16", classes(changed=1), "openvino-bf16"),
        ("amx_bf16", classes(lost=20), None),
    ):
        monkeypatch.setattr(choice, "measure", measured_as(verdict))
        other = load_config([*overrides, "model.runtime=auto", f"model.cpu_features=[avx2,avx512f,{flags}]"])
        said.clear()
        cut = open_cut(other, scan(other.data, other.work_dir), 1)
        assert cut.runtime == (expected or next(r for r in ("onnx", "openvino") if cut.runtime == r))
        line = next(line for line in said if line.startswith("Backbone runtime: "))
        assert ("(auto: openvino-bf16 passes (3.00x fp32" in line) == (expected is not None), line
        assert line.endswith("cut below the top 1 block(s)")
