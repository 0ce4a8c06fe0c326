"""The real path: clothing-dataset-small and the real Xception ImageNet weights from ../shared."""

import pytest

from fashion_exp.config import load_config
from fashion_exp.search.run import run_search
from tests.synthetic import REAL_DATA, REAL_WEIGHTS

REAL = [
    pytest.mark.real,
    pytest.mark.slow,
    pytest.mark.skipif(not (REAL_DATA.is_dir() and REAL_WEIGHTS.is_file()), reason="../shared data or weights missing"),
]
pytestmark = REAL  # (test_real_final.py and test_real_workers.py too)


def test_real_xception_features_learn_the_real_classes(tmp_path, said):
    config = load_config(
        [
            f"data.root={REAL_DATA}",
            f"model.weights={REAL_WEIGHTS}",
            "data.limit_per_class=20",  # 200 train / 200 validation images keep CI quick
            "data.image_size=150",
            f"work_dir={tmp_path / 'work'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tuner.max_trials=2",
            "tuner.epochs=10",
            "search.learning_rate.values=[0.001]",
            "search.size_inner.values=[0,100]",
            "search.droprate.values=[0.2]",
            "search.augmentation.values=[none]",
        ]
    )
    result = run_search(config)
    # model.runtime=auto on a CPU measures fp32 ONNX against int8 (and bf16 where the CPU has it) on
    # real photos and extracts with what passed its check; chance is 0.10, ImageNet features reach
    # about 0.64 here from 20 images per class
    if not _gpu():
        import json
        from pathlib import Path

        from fashion_exp.features.choice import Measured, Record, pick
        from fashion_exp.hardware import cpu_of

        (record,) = Path(config.work_dir, "backbones").glob("auto-*.json")
        saved = json.loads(record.read_text())
        measured = [Measured(**row) for row in saved["measured"]]
        expected = ["onnx-int8", *(["openvino-bf16"] if cpu_of().bf16 else [])]
        assert measured[0].runtime in ("onnx", "openvino") and [row.runtime for row in measured[1:]] == expected
        assert all(row.cosine > 0.9 and row.images_per_s > 0 for row in measured)
        assert len(saved["labels"]) > 150 and all(len(row.predicted) == len(saved["labels"]) for row in measured)
        chosen, _ = pick(Record(saved["labels"], measured), config.model)
        assert any(line.startswith(f"Backbone runtime: {chosen} (auto: ") for line in said), said
    assert result.best_score >= 0.5, result


def subset(tmp_path) -> list[str]:
    """Overrides for 10 real photos per class, with every output in tmp_path."""
    return [
        f"data.root={REAL_DATA}",
        f"model.weights={REAL_WEIGHTS}",
        "data.limit_per_class=10",
        f"work_dir={tmp_path / 'work'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]


def _gpu() -> bool:
    from fashion_exp.features.runtime import gpu_visible

    return gpu_visible()


def test_real_fine_tuning_trains_block14_and_ships_it(tmp_path, said):
    """search=finetune on real photos and weights: a trial trains Xception's block14 on cached
    block13 activations, and train-final ships the trained block inside the one Keras model,
    which agrees with the cached path on every validation photo."""
    from fashion_exp.final.train import train_final

    common = [
        *subset(tmp_path),
        "search=finetune",
        "search.blocks.values=[1]",
        "search.block_lr.values=[0.1]",
    ]
    result = run_search(
        load_config(
            [
                *common,
                "data.image_size=100",
                "tuner.max_trials=1",
                "tuner.epochs=4",
                "search.learning_rate.values=[0.001]",
                "search.size_inner.values=[100]",
                "search.droprate.values=[0.2]",
                "search.augmentation.values=[none]",
            ]
        ),
    )
    assert "blocks=1: activations 3x3x1024 cached in float16, 18,432 bytes a photo" in " ".join(said)
    assert result.best_hyperparameters["blocks"] == 1 and result.best_score >= 0.25, result  # chance is 0.10
    final = train_final(load_config([*common, "final.image_size=100", "final.epochs=3", "final.restarts=1"]))
    assert final.hyperparameters.blocks == 1
    assert final.top1_agreement == 1.0 and final.max_abs_diff < 1e-3  # float16 maps against the float32 model
