"""Cross-validated trial scores (tuner.folds): fold assignment, pooling, and the tuner's signal."""

from types import SimpleNamespace

import keras_tuner as kt
import numpy as np
import pytest

from fashion_exp.hyperparameters import HeadParams, ParamSpace
from fashion_exp.search.folds import CrossValidation, FoldData, FoldPlan, cross_validate, fold_ids, pool
from fashion_exp.search.hypermodel import HeadHyperModel


def test_folds_are_stratified_balanced_and_seeded():
    labels = np.repeat(np.arange(4), [10, 7, 3, 1])
    ids = fold_ids(labels, 3, seed=0)
    for label in range(4):  # every class spread over the folds within one photo
        counts = np.bincount(ids[labels == label], minlength=3)
        assert counts.max() - counts.min() <= 1
    sizes = np.bincount(ids, minlength=3)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == len(labels)
    assert np.array_equal(ids, fold_ids(labels, 3, seed=0))
    assert not np.array_equal(ids, fold_ids(labels, 3, seed=1))
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_ids(labels, 1, seed=0)


def test_pooled_accuracy_is_the_share_of_all_rows_right():
    # fold A: 8 rows, epoch accuracies 0.5 then 1.0; fold B: 2 rows, 1.0 then 0.0
    histories = [
        {"val_accuracy": [0.5, 1.0], "val_loss": [1.0, 0.2]},
        {"val_accuracy": [1.0, 0.0], "val_loss": [0.1, 3.0]},
    ]
    cv = pool(histories, [8, 2])
    assert cv.val_accuracy == pytest.approx([(4 + 2) / 10, (8 + 0) / 10])
    assert cv.val_loss == pytest.approx([(8 * 1.0 + 2 * 0.1) / 10, (8 * 0.2 + 2 * 3.0) / 10])
    assert cv.best_epoch == 1 and cv.fold_best == [1.0, 1.0]
    assert CrossValidation([0.5, 0.7, 0.7], [1, 1, 1], []).best_epoch == 1  # the first of equal bests


def test_validation_rows_join_every_view_unaugmented():
    train_views = np.stack([np.full((3, 2), v, np.float32) for v in (1, 2)])  # 2 views of 3 photos
    data = FoldData.join(
        train_views, np.zeros((3, 2), np.float32), np.array([0, 1, 2]), np.full((2, 2), 9.0), np.array([1, 0])
    )
    assert data.views.shape == (2, 5, 2) and data.clean.shape == (5, 2)
    assert np.all(data.views[:, 3:] == 9.0) and np.all(data.clean[:3] == 0) and list(data.labels) == [0, 1, 2, 1, 0]


def separable(n, dim, classes, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, dim))
    return (centres[labels] + rng.normal(scale=1.5, size=(n, dim))).astype(np.float32), labels


def test_a_cross_validated_trial_reports_the_pooled_held_out_score():
    """The tuner's per-epoch val_accuracy of a folds=3 trial is cross_validate's pooled curve
    (every row of train + validation held out once), not the fold-0 head's own score."""
    classes, epochs, seed = 3, 4, 7
    train, train_labels = separable(60, 8, classes, 0)
    val, val_labels = separable(15, 8, classes, 1)
    views = np.stack([train + 0.1, train - 0.1])  # two "augmented" views
    space = {
        "learning_rate": ParamSpace("choice", [0.01]),
        "size_inner": ParamSpace("choice", [16]),
        "droprate": ParamSpace("choice", [0.0]),
        "augmentation": ParamSpace("choice", ["flip"]),
    }
    features = SimpleNamespace(
        views=lambda policy: views,
        train_labels=train_labels,
        val=val,
        val_labels=val_labels,
        n_classes=classes,
        train_clean=train,
        top=None,
    )
    model = HeadHyperModel(space, {0: features}, {"flip": "the flip policy"}, 8, 64, seed, folds=3)
    hp = kt.HyperParameters()
    history = model.fit(hp, model.build(hp), epochs=epochs)
    params = HeadParams(0.01, 16, 0.0, "flip")
    data = FoldData.join(views, train, train_labels, val, val_labels)
    plan = FoldPlan(fold_ids(data.labels, 3, seed), classes, 8, 64, seed)
    expected = cross_validate(data, params, plan, epochs)
    assert history.history["val_accuracy"] == pytest.approx(expected.val_accuracy, abs=1e-6)
    assert history.history["val_loss"] == pytest.approx(expected.val_loss, abs=1e-5)
    assert len(set(np.round(expected.val_accuracy, 6))) > 1 or expected.val_accuracy[0] < 1  # not a constant curve
