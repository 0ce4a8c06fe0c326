"""Whether a lower precision (bf16, int8) keeps what a user cares about, judged on paired photos.

Two one-sided tests at the same confidence, on the same photos scored both ways:
- accuracy: the upper bound of (reference accuracy - candidate accuracy) must stay under a margin
  (Agresti-Min adjusted Wald interval for a paired difference of proportions: half a photo added
  to each cell, so that a run with no changed photo still carries the uncertainty of n photos);
- agreement: the upper bound of the share of photos whose class changes (Wilson score interval)
  must stay under a ceiling.
With n photos and no change at all, the accuracy bound is z / (n + 2): a 1-point margin at 95%
needs at least 163 photos to pass even a perfect candidate. Too few photos refuse, and say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class GateRule:
    """What a candidate must show: accuracy lost < margin and changed photos < max_changed, each
    at `confidence` (one-sided)."""

    margin: float
    max_changed: float
    confidence: float

    @property
    def z(self) -> float:
        return NormalDist().inv_cdf(self.confidence)

    @classmethod
    def of(cls, model) -> GateRule:
        """The rule model.auto_accuracy_margin, auto_max_changed and auto_confidence set (conf/model)."""
        return cls(model.auto_accuracy_margin, model.auto_max_changed, model.auto_confidence)

    def photos_needed(self) -> int:
        """The fewest photos with which even a candidate that changes nothing passes the accuracy test."""
        return math.floor(self.z / self.margin - 2) + 1


@dataclass(frozen=True)
class GateResult:
    """The paired comparison of a candidate with its reference on n photos."""

    photos: int
    reference_accuracy: float
    candidate_accuracy: float
    lost_upper: float  # upper bound of the accuracy the candidate loses (can be negative: it gains)
    changed: int  # photos whose predicted class differs
    changed_upper: float  # upper bound of the share of photos whose class changes
    holds: bool

    @property
    def agreement(self) -> float:
        return 1 - self.changed / self.photos if self.photos else 0.0

    def describe(self, rule: GateRule) -> str:
        """One clause: what was measured and why it holds or not."""
        numbers = (
            f"accuracy {self.candidate_accuracy:.4f} vs {self.reference_accuracy:.4f} on {self.photos} photos, "
            f"loss at most {100 * self.lost_upper:+.2f} pts (margin {100 * rule.margin:g}), "
            f"{self.changed} changed class (at most {100 * self.changed_upper:.1f}%, "
            f"ceiling {100 * rule.max_changed:g}%)"
        )
        if self.photos < rule.photos_needed():
            numbers += f"; {self.photos} photos are too few for a {100 * rule.margin:g}-pt margin"
        return numbers


def accuracy_loss_upper(reference_right: np.ndarray, candidate_right: np.ndarray, z: float) -> float:
    """Upper bound (one-sided, z) of accuracy(reference) - accuracy(candidate) on paired photos."""
    reference_right, candidate_right = np.asarray(reference_right, bool), np.asarray(candidate_right, bool)
    n = len(reference_right) + 2  # Agresti-Min: half a photo in each of the four cells
    lost = float(np.sum(reference_right & ~candidate_right)) + 0.5
    gained = float(np.sum(~reference_right & candidate_right)) + 0.5
    difference = (lost - gained) / n
    spread = math.sqrt(max(lost + gained - (lost - gained) ** 2 / n, 0.0)) / n
    return difference + z * spread


def share_upper(count: int, total: int, z: float) -> float:
    """Wilson score upper bound (one-sided, z) of a proportion count / total."""
    if total == 0:
        return 1.0
    p = count / total
    centre = p + z * z / (2 * total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return min((centre + half) / (1 + z * z / total), 1.0)


def judge(labels, reference_pred, candidate_pred, rule: GateRule) -> GateResult:
    """Compare the candidate's predicted classes with the reference's on the same labelled photos."""
    labels, reference_pred, candidate_pred = map(np.asarray, (labels, reference_pred, candidate_pred))
    n = len(labels)
    reference_right, candidate_right = reference_pred == labels, candidate_pred == labels
    lost_upper = accuracy_loss_upper(reference_right, candidate_right, rule.z)
    changed = int(np.sum(reference_pred != candidate_pred))
    changed_upper = share_upper(changed, n, rule.z)
    holds = n > 0 and lost_upper < rule.margin and changed_upper <= rule.max_changed
    return GateResult(
        n,
        float(np.mean(reference_right)) if n else 0.0,
        float(np.mean(candidate_right)) if n else 0.0,
        lost_upper,
        changed,
        changed_upper,
        bool(holds),
    )
