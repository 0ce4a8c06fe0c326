"""final.ensemble: the k best restarts' heads averaged in one model.

The heads share the backbone, so serving an ensemble costs one Xception pass plus k small heads:
what one model costs. (Heads that fine-tune blocks each carry their own copy of those blocks: one
pass of the frozen part plus k passes of the blocks.) Members are the restarts ranked by the
objective; the ensemble of size k is the mean of the k best heads' softmax probabilities. With
final.ensemble=auto, k is the size whose ensemble ranks best on the validation photos (the
objective, then the other metric), the smallest such k on a tie: k=1 when averaging does not help.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from fashion_exp.final.restarts import rank
from fashion_exp.final.selection import score
from fashion_exp.head.parts import name_heads

AUTO = "auto"


@dataclass
class EnsembleScore:
    """The validation score of the ensemble of the `size` best restarts."""

    size: int
    val_accuracy: float
    val_loss: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def member_probabilities(heads: list[keras.Model], features: np.ndarray) -> np.ndarray:
    """(k members, n rows, classes): each head's softmax probabilities on cached features."""
    return np.stack([softmax(np.asarray(head.predict(features, verbose=0), np.float64)) for head in heads])


def score_sizes(probabilities: np.ndarray, labels: np.ndarray) -> list[EnsembleScore]:
    """Accuracy and mean log loss of the mean of the first k members, for every k."""
    scores = []
    for size in range(1, len(probabilities) + 1):
        scores.append(EnsembleScore(size, *score(probabilities[:size].mean(axis=0), labels)))
    return scores


def choose_size(scores: list[EnsembleScore], setting: int | str, objective: str) -> int:
    """final.ensemble: a fixed size, or (auto) the best-ranked one, the smallest on a tie."""
    if setting != AUTO:
        return int(setting)
    best = max(scores, key=lambda s: (rank(objective, s.val_accuracy, s.val_loss), -s.size))
    return best.size


def probabilities(
    heads: list[keras.Model], features, prefix: str = "", weights: list[float] | None = None
) -> keras.KerasTensor:
    """Symbolic class probabilities of `features`: one head's softmax, or the mean of the heads'
    (weighted by `weights`, forward selection's, when given and not all equal).
    `prefix` keeps the layer names apart where several groups of heads share one model (combine)."""
    name = f"{prefix}probabilities"
    name_heads(heads, prefix)  # (head/parts.py: the names combine finds them by)
    if len(heads) == 1:
        return keras.layers.Softmax(name=name)(heads[0](features))
    outputs = [keras.layers.Softmax(name=f"{name}_{i}")(head(features)) for i, head in enumerate(heads)]
    if weights is None or len(set(weights)) == 1:
        return keras.layers.Average(name=name)(outputs)
    return weighted_mean(outputs, weights, name)


WEIGHTED = "_members"  # the suffix of a weighted ensemble's concatenated member probabilities


def weighted_mean(outputs: list, weights: list[float], name: str) -> keras.KerasTensor:
    """sum_i weights[i] * outputs[i], in Keras' own layers (a model that loads in safe mode and
    exports to ONNX): the members' probabilities side by side, times a fixed (k*c, c) matrix."""
    classes = int(outputs[0].shape[-1])
    stacked = keras.layers.Concatenate(name=f"{name}{WEIGHTED}")(outputs)
    layer = keras.layers.Dense(classes, use_bias=False, trainable=False, name=name)
    mixed = layer(stacked)
    layer.set_weights([np.kron(np.asarray(weights, np.float32)[:, None], np.eye(classes, dtype=np.float32))])
    return mixed
