"""Ensemble selection (Caruana et al. 2004, "Ensemble selection from libraries of models"):
greedy forward selection with replacement over held-out predictions.

Start from the best single member; each round adds the member (one already in, or a new one)
whose addition gives the best held-out score of the mean, for `rounds` rounds (a round that makes
the score worse may lead to a better weighting later); the best ensemble seen is kept, the
smallest on a tie. A member added m times weighs m / (members added). The held-out predictions must not be
the test split: train-final passes the validation photos, which no member trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fashion_exp.final.restarts import rank


@dataclass(frozen=True)
class Selection:
    counts: list[int]  # times each member was added (0: left out)
    val_accuracy: float  # of the weighted mean, on the held-out rows
    val_loss: float

    @property
    def weights(self) -> list[float]:
        total = sum(self.counts)
        return [count / total for count in self.counts]

    @property
    def members(self) -> list[int]:
        return [i for i, count in enumerate(self.counts) if count]


def score(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean log loss) of (n rows, classes) probabilities."""
    picked = probabilities[np.arange(len(labels)), labels]
    return float(np.mean(probabilities.argmax(1) == labels)), float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


def _better(key: tuple[float, float], than: tuple[float, float], by: float = 1e-9) -> bool:
    """key beats `than` by more than rounding (n copies of one member average to itself, give or take 1e-16)."""
    for mine, theirs in zip(key, than, strict=True):
        if abs(mine - theirs) > by:
            return mine > theirs
    return False


def forward_select(probabilities: np.ndarray, labels: np.ndarray, objective: str, rounds: int) -> Selection:
    """probabilities: (k members, n held-out rows, classes), each member's softmax outputs."""
    k = len(probabilities)
    keys = [rank(objective, *score(p, labels)) for p in probabilities]
    first = max(range(k), key=keys.__getitem__)
    counts = [0] * k
    counts[first] = 1
    total = probabilities[first].astype(np.float64)  # the sum of the added members' probabilities
    best, kept = keys[first], list(counts)
    for _ in range(rounds - 1):
        n = sum(counts)
        trials = [rank(objective, *score((total + probabilities[i]) / (n + 1), labels)) for i in range(k)]
        pick = max(range(k), key=trials.__getitem__)
        counts[pick] += 1
        total += probabilities[pick]
        if _better(trials[pick], best):  # on a tie the smaller ensemble stays
            best, kept = trials[pick], list(counts)
    mean = np.tensordot(np.array(kept, np.float64) / sum(kept), probabilities, axes=1)
    return Selection(kept, *score(mean, labels))


def equal(probabilities: np.ndarray, labels: np.ndarray) -> Selection:
    """final.ensemble=mean: every member once, the plain mean (nothing chosen on the held-out rows:
    weights chosen on a few hundred photos overfit them, docs/results.md "Two levers")."""
    return Selection([1] * len(probabilities), *score(probabilities.mean(axis=0), labels))
