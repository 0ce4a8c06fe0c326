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
pytestmark = REAL  # (test_real_finetune.py too)


def test_real_xception_features_learn_the_real_classes_then_ship(tmp_path, said, store_uri):
    """tune on real photos and weights (auto picks the backbone's runtime on this CPU), then the
    final model, evaluate, promote and predict from it."""
    args = [
        f"data.root={REAL_DATA}",
        f"model.weights={REAL_WEIGHTS}",
        "data.limit_per_class=20",  # 200 train / 200 validation images keep CI quick
        "data.image_size=128",  # (Xception's cost goes with the pixels: 128px is 0.73 of 150's)
        "model.race_batches=1",  # each fp32 runtime timed on one batch after its warm-up: the race, not its statistics
        "model.auto_check_photos=100",  # the check's heads fit on 100 of 200 training photos, score every val one
        f"work_dir={tmp_path / 'work'}",
        f"tracking.uri={store_uri}",  # (a copy of the migrated empty store)
        "tuner.max_trials=2",
        "tuner.epochs=10",
        "search.learning_rate.values=[0.001]",
        "search.size_inner.values=[0,100]",
        "search.droprate.values=[0.2]",
        "search.augmentation.values=[none]",
    ]
    config = load_config(args)
    result = run_search(config)
    # model.runtime=auto on a CPU measures fp32 ONNX against int8 (and bf16 where the CPU has it) on
    # real photos and extracts with what passed its check; chance is 0.10, ImageNet features reach
    # about 0.55 here from 20 images per class at 128px (0.5538 on a Zen 4)
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
    final_model_evaluate_promote_predict(args)


def final_model_evaluate_promote_predict(args: list[str]) -> None:
    """train-final -> evaluate -> promote -> predict from that search, on the same real photos: the
    final model's features are fp32 (the shipped model's) whichever runtime the search's cut ran on,
    from the ONNX export the search made (one real Xception export for the whole chain)."""
    from fashion_exp.final.evaluate import evaluate
    from fashion_exp.final.train import train_final
    from fashion_exp.serving.predict import predict_files
    from fashion_exp.tracking import registry

    overrides = ["final.image_size=128", "final.epochs=20", "final.restarts=1", "final.views=1"]
    config = load_config([*args, *overrides])
    final = train_final(config)
    assert final.max_abs_diff < 1e-4 and final.top1_agreement == 1.0
    result, _ = evaluate(config, None)
    assert result.accuracy >= 0.4  # chance is 0.10
    assert registry.promote(config.tracking.uri, "fashion-classifier")[-1].startswith("'fashion-classifier@champion'")
    champion = registry.load("models:/fashion-classifier@champion", config.tracking.uri)
    shoes = sorted((REAL_DATA / "test" / "shoes").iterdir())[:3]
    predictions = predict_files(champion, shoes, config.predict.top_k, config.data.max_image_pixels, 32)
    assert all(p.error is None and len(p.top) == 3 for p in predictions)


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
