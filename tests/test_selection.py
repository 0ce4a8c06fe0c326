"""Ensemble selection picks the better member set on held-out predictions built to make the answer known."""

import numpy as np
import pytest

from fashion_exp.config import load_config
from fashion_exp.final.selection import equal, forward_select, score

ROUNDS = load_config([]).final.selection_rounds  # conf/final's

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])


def confident(right: list[bool], classes: int = 3, sure: float = 0.7) -> np.ndarray:
    """Probabilities that put `sure` on the true class where right, else on the next class."""
    rows = np.full((len(LABELS), classes), (1 - sure) / (classes - 1))
    for i, (label, ok) in enumerate(zip(LABELS, right, strict=True)):
        rows[i] = (1 - sure) / (classes - 1)
        rows[i, label if ok else (label + 1) % classes] = sure
    return rows


def test_two_members_that_err_on_different_rows_beat_the_best_single_one():
    # a and b are each right on 7 of 10 rows, wrong on different rows; c is right on 8 but errs
    # where a and b do not help it. a+b+c: every row has two right votes of three.
    a = confident([True] * 7 + [False] * 3)
    b = confident([False] * 3 + [True] * 7)
    c = confident([True] * 3 + [False, False] + [True] * 5)
    noise = confident([False] * 6 + [True] * 4)
    picked = forward_select(np.stack([noise, a, b, c]), LABELS, "val_accuracy", ROUNDS)
    assert picked.counts[0] == 0  # the bad member stays out
    assert picked.val_accuracy == 1.0 and set(picked.members) == {1, 2, 3}
    single = max(score(p, LABELS)[0] for p in (a, b, c))
    assert picked.val_accuracy > single


def test_when_averaging_does_not_help_one_member_is_shipped():
    best = confident([True] * 9 + [False])
    worse = confident([True] * 5 + [False] * 5)
    picked = forward_select(np.stack([worse, best]), LABELS, "val_accuracy", ROUNDS)
    assert picked.counts == [0, 1] and picked.weights == [0.0, 1.0]


def test_a_member_can_be_added_twice_and_weighs_twice():
    # strong is right on 8 rows, weak on the other 2, both sure: the plain mean of the two is worse
    # than strong alone (log loss 0.74 against 0.68), a mean that weighs strong more is better, so
    # selection goes on past rounds that are no better and adds strong again
    strong = confident([True] * 8 + [False] * 2, sure=0.9)
    weak = confident([False] * 8 + [True] * 2, sure=0.9)
    members = np.stack([strong, weak])
    picked = forward_select(members, LABELS, "val_loss", rounds=10)
    assert picked.counts[0] >= 2 and picked.counts[1] == 1
    assert picked.weights == pytest.approx([c / sum(picked.counts) for c in picked.counts])
    assert picked.val_loss == pytest.approx(score(np.tensordot(picked.weights, members, 1), LABELS)[1])
    assert picked.val_loss < score(strong, LABELS)[1]


def test_the_equal_mean_keeps_every_member_once_where_selection_would_drop_one():
    """final.ensemble=mean chooses nothing on the held-out rows: the weaker member stays, at the
    plain mean's score, where forward selection ships the best alone."""
    best = confident([True] * 9 + [False])
    worse = confident([True] * 5 + [False] * 5)
    members = np.stack([worse, best])
    mean = equal(members, LABELS)
    assert mean.counts == [1, 1] and mean.weights == [0.5, 0.5] and mean.members == [0, 1]
    assert (mean.val_accuracy, mean.val_loss) == pytest.approx(score(members.mean(axis=0), LABELS))
    assert forward_select(members, LABELS, "val_accuracy", ROUNDS).counts == [0, 1]
