"""train-final's restarts: one head per seed, the best validation epoch of the best restart is kept."""

import io
from functools import partial

import numpy as np
import pytest
from tqdm import tqdm

from fashion_exp.final.restarts import EpochBar, HeadTraining, Restart, train_once, train_restarts
from fashion_exp.hyperparameters import HeadParams


def _features(seed=0, n=120, dim=8, classes=3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 1.2
    labels = rng.integers(0, classes, n)
    features = (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32)
    return features, labels


HP = HeadParams(learning_rate=0.01, size_inner=8, droprate=0.2, augmentation="none")


def _data():
    train, train_y = _features(0)
    val, val_y = _features(1, n=60)
    return train[None], train_y, (val, val_y)


def _training(views, labels, val, epochs):
    return HeadTraining(views, labels, val, 3, epochs, 16, 256, "val_accuracy")


def test_the_kept_head_is_the_best_epoch_of_the_best_restart():
    views, labels, (val, val_y) = _data()
    seen = []
    train = partial(train_once, _training(views, labels, (val, val_y), 6), HP)
    kept = train_restarts(train, [3, 4, 5], "val_accuracy", lambda i, r: seen.append((i, r.seed)))
    heads, ranked, every = kept.heads, kept.ranked, kept.every
    (head,), (best,) = heads, ranked
    assert seen == [(0, 3), (1, 4), (2, 5)]
    assert [r.seed for r in every] == [3, 4, 5]
    assert best.rank("val_accuracy") == max(r.rank("val_accuracy") for r in every)
    assert len({tuple(r.history["val_accuracy"]) for r in every}) > 1  # the seeds really differ
    for r in every:
        assert r.val_accuracy == max(r.history["val_accuracy"])
        assert r.val_accuracy == r.history["val_accuracy"][r.best_epoch]
    # the returned head holds the chosen restart's best epoch, not its last one
    predicted = head.predict(val, verbose=0).argmax(1)
    assert np.mean(predicted == val_y) == pytest.approx(best.val_accuracy, abs=1e-6)


def test_one_restart_equals_one_training_with_that_seed():
    views, labels, val = _data()
    _, alone = train_once(_training(views, labels, val, 5), HP, 7)
    kept = train_restarts(partial(train_once, _training(views, labels, val, 5), HP), [7], "val_accuracy")
    (best,), every = kept.ranked, kept.every
    assert len(every) == 1 and best.history == alone.history


def test_ties_go_to_the_lower_val_loss_then_the_earlier_restart():
    outcomes = {
        1: Restart(1, 3, 0.9, 0.40, {}),
        2: Restart(2, 5, 0.9, 0.30, {}),  # same accuracy as 1, lower loss: wins
        3: Restart(3, 2, 0.8, 0.10, {}),  # lowest loss, lower accuracy
        4: Restart(4, 0, 0.9, 0.30, {}),  # an exact tie with 2: the earlier restart stays
    }
    kept = train_restarts(lambda seed: (f"head {seed}", outcomes[seed]), [1, 2, 3, 4], "val_accuracy")
    heads, ranked, every = kept.heads, kept.ranked, kept.every
    assert heads == ["head 2"] and ranked[0].seed == 2 and len(every) == 4
    kept = train_restarts(lambda seed: (f"head {seed}", outcomes[seed]), [1, 2, 3, 4], "val_accuracy", keep=3)
    assert kept.heads == ["head 2", "head 4", "head 1"] and [r.seed for r in kept.ranked] == [2, 4, 1]


def test_no_seeds_is_an_error():
    with pytest.raises(ValueError, match="at least one seed"):
        train_restarts(lambda seed: None, [], "val_accuracy")


def test_val_loss_objective_keeps_the_lowest_loss_epoch_and_restart():
    from dataclasses import replace

    views, labels, val = _data()
    _, restart = train_once(replace(_training(views, labels, val, 6), objective="val_loss"), HP, 3)
    assert restart.val_loss == min(restart.history["val_loss"])
    assert restart.best_epoch == int(np.argmin(restart.history["val_loss"]))
    outcomes = {
        1: Restart(1, 0, 0.90, 0.40, {}),
        2: Restart(2, 0, 0.80, 0.30, {}),
        3: Restart(3, 0, 0.85, 0.30, {}),  # the same loss as 2, better accuracy: wins
    }
    assert train_restarts(lambda seed: (seed, outcomes[seed]), [1, 2, 3], "val_loss").ranked[0].seed == 3


def test_patience_stops_a_restart_that_no_longer_improves_and_keeps_its_best_epoch():
    """final.patience: a head whose objective has not improved for `patience` epochs stops; the
    restart still reports (and the head still holds) its best epoch. A learning rate of ~0 never
    improves on epoch 0, so patience 2 ends the fit after epoch 2 of 8."""
    views, labels, val = _data()
    still = HeadParams(learning_rate=1e-12, size_inner=8, droprate=0.0, augmentation="none")
    patient = HeadTraining(views, labels, val, 3, 8, 16, 256, "val_accuracy", patience=2)
    with tqdm(total=8, file=io.StringIO()) as bar:
        _, stopped = train_once(patient, still, seed=3, callbacks=[EpochBar(bar)])
        assert bar.total == bar.n == 3  # the bar's total drops to the epochs that ran
    assert len(stopped.history["val_accuracy"]) == 3 and stopped.best_epoch == 0
    _, full = train_once(_training(views, labels, val, 8), still, seed=3)
    assert len(full.history["val_accuracy"]) == 8  # no patience: every epoch
    learning = HeadTraining(views, labels, val, 3, 8, 16, 256, "val_accuracy", patience=2)
    head, restart = train_once(learning, HP, seed=3)
    assert restart.val_accuracy == max(restart.history["val_accuracy"])
    predicted = head.predict(val[0], verbose=0).argmax(1)  # the head holds the best epoch, not the last
    assert np.mean(predicted == val[1]) == pytest.approx(restart.val_accuracy)


def test_an_averaging_head_is_validated_and_kept_with_its_averaged_weights():
    """ema: each epoch's validation and the head kept are the moving average's. With a momentum
    that barely moves the average after its first step, every epoch scores the same; the head
    kept scores what its best epoch did."""
    views, labels, (val, val_y) = _data()
    still = HeadParams(learning_rate=0.05, size_inner=8, droprate=0.0, augmentation="none", ema=0.999999)
    for params, averaged in ((still, True), (HeadParams(**{**still.as_dict(), "ema": 0.0}), False)):
        head, restart = train_once(_training(views, labels, (val, val_y), 4), params, 7)
        logits = head.predict(val, verbose=0)
        assert np.mean(logits.argmax(1) == val_y) == pytest.approx(restart.val_accuracy, abs=1e-6)
        moved = np.ptp(restart.history["val_loss"])
        assert (moved < 1e-3) if averaged else (moved > 0.01), (averaged, moved)


def test_label_smoothing_is_kerases_on_one_hot_labels():
    import keras

    from fashion_exp.head.model import SmoothedSparseCrossentropy

    logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 0])
    ours = SmoothedSparseCrossentropy(0.1)(labels, logits)
    kerases = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(np.eye(4)[labels], logits)
    assert float(ours) == pytest.approx(float(kerases), rel=1e-5)
