"""The real path, fine-tuning: clothing-dataset-small and the real Xception ImageNet weights from
../shared. (A file of its own: pytest-xdist's loadfile runs it beside test_real.py.)"""

from fashion_exp.config import load_config
from fashion_exp.search.run import run_search
from tests.test_real import REAL, subset

pytestmark = REAL


def test_real_fine_tuning_trains_block14_and_ships_it(tmp_path, said, store_uri):
    """search=finetune on real photos and weights: a trial trains Xception's block14 on cached
    block13 activations, and train-final ships the trained block inside the one Keras model,
    which agrees with the cached path on every validation photo."""
    from fashion_exp.final.train import train_final

    common = [
        *subset(tmp_path),  # (its tmp_path/mlflow.db: store_uri's copy of the migrated empty store)
        "model.runtime=tensorflow",  # (auto's race on real photos is test_real.py's: one Xception ONNX export a suite)
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
    # float16 maps against the float32 model: max |diff| is what the check promises; a photo whose two
    # best classes lie within 2 x max |diff| may flip (0.99 once with model.runtime=tensorflow, 7.9e-5)
    assert final.max_abs_diff < 1e-3 and final.top1_agreement >= 0.98, final
