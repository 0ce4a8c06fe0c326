"""The real path, train-final, evaluate, promote, predict: clothing-dataset-small and the real Xception ImageNet
weights from ../shared. (A file of its own: pytest-xdist's loadfile runs it beside test_real.py.)"""

from fashion_exp.config import load_config
from fashion_exp.search.run import run_search
from tests.synthetic import REAL_DATA
from tests.test_real import REAL, subset

pytestmark = REAL


def test_real_final_model_evaluate_promote_predict(tmp_path):
    """train-final -> evaluate -> promote -> predict with real Xception on a small real subset."""
    from fashion_exp.final.evaluate import evaluate
    from fashion_exp.final.train import train_final
    from fashion_exp.serving.predict import predict_files
    from fashion_exp.tracking import registry

    common = subset(tmp_path)
    run_search(
        load_config(
            [
                *common,
                "data.image_size=100",
                "model.runtime=tensorflow",
                "tuner.max_trials=1",
                "tuner.epochs=3",
                "search.learning_rate.values=[0.001]",
                "search.size_inner.values=[0]",
                "search.droprate.values=[0.0]",
                "search.augmentation.values=[none]",
            ]
        ),
    )
    config = load_config([*common, "final.image_size=150", "final.epochs=20", "final.restarts=2"])
    final = train_final(config)  # auto: fp32 Xception on ONNX Runtime, the Keras model's features
    assert final.max_abs_diff < 1e-4 and final.top1_agreement == 1.0
    result, _ = evaluate(config, None)
    assert result.accuracy >= 0.4  # chance is 0.10
    assert registry.promote(config.tracking.uri, "fashion-classifier")[-1].startswith("'fashion-classifier@champion'")
    champion = registry.load("models:/fashion-classifier@champion", config.tracking.uri)
    shoes = sorted((REAL_DATA / "test" / "shoes").iterdir())[:3]
    predictions = predict_files(champion, shoes, config.predict.top_k, config.data.max_image_pixels, 32)
    assert all(p.error is None and len(p.top) == 3 for p in predictions)
