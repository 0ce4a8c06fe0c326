"""final.ensemble: scoring the ensembles of the k best restarts and choosing k."""

import keras
import numpy as np
import pytest

from fashion_exp.final.ensemble import EnsembleScore, choose_size, probabilities, score_sizes, softmax


def test_each_size_scores_the_mean_of_the_best_members():
    labels = np.array([0, 1])
    members = np.array(
        [
            [[0.6, 0.4], [0.6, 0.4]],  # best restart: right on photo 0, wrong on photo 1
            [[0.3, 0.7], [0.1, 0.9]],  # second: wrong on photo 0, right on photo 1
            [[0.9, 0.1], [0.2, 0.8]],  # third: right on both
        ]
    )
    scores = score_sizes(members, labels)
    assert [s.size for s in scores] == [1, 2, 3]
    assert [s.val_accuracy for s in scores] == [0.5, 0.5, 1.0]  # mean of 1+2: [0.45, 0.55] and [0.35, 0.65]
    assert scores[0].val_loss == pytest.approx(-(np.log(0.6) + np.log(0.4)) / 2)
    assert scores[2].val_loss == pytest.approx(-(np.log(0.6) + np.log(0.7)) / 2)


def test_auto_takes_the_best_size_and_the_smallest_on_a_tie():
    scores = [EnsembleScore(1, 0.90, 0.30), EnsembleScore(2, 0.92, 0.29), EnsembleScore(3, 0.92, 0.29)]
    assert choose_size(scores, "auto", "val_accuracy") == 2
    assert (
        choose_size([EnsembleScore(1, 0.9, 0.3), EnsembleScore(2, 0.9, 0.2)], "auto", "val_accuracy") == 2
    )  # loss breaks it
    assert choose_size([EnsembleScore(1, 0.9, 0.3), EnsembleScore(2, 0.8, 0.2)], "auto", "val_accuracy") == 1
    assert choose_size([EnsembleScore(1, 0.9, 0.3), EnsembleScore(2, 0.8, 0.2)], "auto", "val_loss") == 2
    assert choose_size(scores, 3, "val_accuracy") == 3


def test_the_ensemble_model_averages_the_heads_softmax():
    rng = np.random.default_rng(0)
    heads = []
    for seed in (1, 2, 3):
        keras.utils.set_random_seed(seed)
        x = keras.Input((4,))
        heads.append(keras.Model(x, keras.layers.Dense(3)(x), name="head"))  # alike: the same name
    features = rng.normal(size=(6, 4)).astype(np.float32)
    x = keras.Input((4,), name="features")
    model = keras.Model(x, probabilities(heads, x))
    expected = np.mean([softmax(h.predict(features, verbose=0)) for h in heads], axis=0)
    np.testing.assert_allclose(model.predict(features, verbose=0), expected, atol=1e-6)
    single = keras.Model(x, probabilities(heads[:1], x))
    np.testing.assert_allclose(
        single.predict(features, verbose=0), softmax(heads[0].predict(features, verbose=0)), atol=1e-6
    )


def test_a_weighted_ensemble_weighs_the_heads_and_survives_a_safe_mode_reload(tmp_path):
    """final.ensemble=select ships forward selection's weights in Keras' own layers: the model
    reloads with safe_mode and gives the weighted mean; combine refuses it (it would average equally)."""
    from fashion_exp.errors import UserError
    from fashion_exp.final.combine import split
    from fashion_exp.tracking.registry import LoadedModel

    rng = np.random.default_rng(0)
    heads = []
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        x = keras.Input((4,))
        heads.append(keras.Model(x, keras.layers.Dense(3)(x), name="head"))
    features = rng.normal(size=(6, 4)).astype(np.float32)
    x = keras.Input((4,), name="features")
    model = keras.Model(x, probabilities(heads, x, weights=[0.75, 0.25]))
    expected = 0.75 * softmax(heads[0].predict(features, verbose=0)) + 0.25 * softmax(
        heads[1].predict(features, verbose=0)
    )
    np.testing.assert_allclose(model.predict(features, verbose=0), expected, atol=1e-6)
    model.save(tmp_path / "weighted.keras")
    reloaded = keras.saving.load_model(tmp_path / "weighted.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(features, verbose=0), expected, atol=1e-6)
    loaded = LoadedModel(reloaded, "models:/fashion-classifier/3", ["a", "b", "c"], 4, "nearest", None)
    with pytest.raises(UserError, match="is a weighted ensemble"):
        split(loaded)
