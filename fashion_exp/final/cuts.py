"""Members that fine-tune different numbers of blocks, shipped in one model.

preset=best's ladder fine-tunes one block and two, and every finished trial is a candidate for
train-final's forward selection (issue 35): a plain head on one block and an augmented one on two
may both be picked. Each member trains and is scored on its own cut's features (the maps below the
blocks it trains). The shipped model runs the frozen part once, up to the deepest cut a shipped
head reads; a head of a shallower cut reads those maps through its own frozen copy of the
pretrained layers between the two cuts (features/backbone.Backbone.bridges), so the model computes what
each head was scored on. train-final's assembly check compares the two on every validation photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from fashion_exp.features.features import Features
from fashion_exp.features.layers import plain_copy


@dataclass
class MemberFeatures:
    """The features of every cut train-final's members read, by number of trained blocks."""

    by_blocks: dict[int, Features]
    first: Features  # member 1's: what the run records as its features (runtime, dataset)

    def of(self, blocks: int) -> Features:
        return self.by_blocks[blocks]

    @property
    def labels(self):
        return self.first.val_labels


def reading(deepest: Features, head: keras.Model, blocks: int) -> keras.Model:
    """`head`, trained on the cut below the top `blocks` blocks, as a layer that reads `deepest`'s
    maps: itself when the cuts are the same, else the frozen layers between them, then itself."""
    if blocks == deepest.blocks:
        return head
    bridge = plain_copy(deepest.backbone.bridges[blocks])  # (its own copy: no layer shared by two heads)
    bridge.trainable = False
    maps = keras.Input(deepest.backbone.feature_shape, name="maps")
    return keras.Model(maps, head(bridge(maps, training=False)), name=head.name)
