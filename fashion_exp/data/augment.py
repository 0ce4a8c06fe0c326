"""Augmentation policies: seeded random affine views of a decoded image (ImageDataGenerator's math)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fashion_exp.config import AugmentationPolicy

IDENTITY = AugmentationPolicy(views=1, rotation=0.0, shift=0.0, shear=0.0, zoom=0.0, horizontal_flip=False)
"""What validation, test and serving photos get: no transform (validation is never augmented)."""


def is_identity(policy: AugmentationPolicy) -> bool:
    return not (policy.rotation or policy.shift or policy.shear or policy.zoom or policy.horizontal_flip)


def policy_key(policy: AugmentationPolicy) -> str:
    """What identifies a policy's transforms (its parameters, not its name or view count)."""
    if is_identity(policy):
        return "identity"
    return (
        f"rot={policy.rotation},shift={policy.shift},shear={policy.shear},"
        f"zoom={policy.zoom},flip={policy.horizontal_flip}"
    )


def view_rng(seed: int, policy: AugmentationPolicy, view: int, item: str) -> np.random.Generator:
    """One generator per (seed, policy, view, image): a view never depends on batch order or subset."""
    digest = hashlib.sha256(f"{seed}|{policy_key(policy)}|{view}|{item}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class _Draw:
    """One view's random parameters, drawn in ImageDataGenerator's order."""

    theta: float  # rotation, radians
    tx: float  # shift along rows, pixels
    ty: float  # shift along columns, pixels
    shear: float  # radians
    zx: float
    zy: float
    flip: bool

    @classmethod
    def of(cls, policy: AugmentationPolicy, rng: np.random.Generator, h: int, w: int) -> _Draw:
        """Draws only for the transforms the policy has (a view's draws never depend on the others)."""
        theta = np.deg2rad(rng.uniform(-policy.rotation, policy.rotation)) if policy.rotation else 0.0
        tx = rng.uniform(-policy.shift, policy.shift) * h if policy.shift else 0.0
        ty = rng.uniform(-policy.shift, policy.shift) * w if policy.shift else 0.0
        shear = np.deg2rad(rng.uniform(-policy.shear, policy.shear)) if policy.shear else 0.0
        zx, zy = rng.uniform(1 - policy.zoom, 1 + policy.zoom, 2) if policy.zoom else (1.0, 1.0)
        flip = bool(policy.horizontal_flip and rng.random() < 0.5)
        return cls(theta, tx, ty, shear, zx, zy, flip)

    def matrix(self) -> np.ndarray:
        """Rotation, shift, shear and zoom composed into one 3x3 affine map (rows, cols, 1)."""
        theta, shear = self.theta, self.shear
        matrix = np.eye(3)
        if theta:
            rotation = [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
            matrix = matrix @ np.array(rotation)
        if self.tx or self.ty:
            matrix = matrix @ np.array([[1, 0, self.tx], [0, 1, self.ty], [0, 0, 1]])
        if shear:
            matrix = matrix @ np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
        if self.zx != 1 or self.zy != 1:
            matrix = matrix @ np.array([[self.zx, 0, 0], [0, self.zy, 0], [0, 0, 1]])
        return matrix


def _warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`matrix` applied about the image centre, bilinear with nearest-edge fill, back to uint8."""
    h, w = image.shape[:2]
    cx, cy = h / 2 - 0.5, w / 2 - 0.5  # rows, cols: transform about the centre
    to_centre = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    from_centre = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    full = to_centre @ matrix @ from_centre
    channels = [
        ndimage.affine_transform(
            image[..., c].astype(np.float32), full[:2, :2], offset=full[:2, 2], order=1, mode="nearest"
        )
        for c in range(image.shape[2])
    ]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def random_transform(image: np.ndarray, policy: AugmentationPolicy, rng: np.random.Generator) -> np.ndarray:
    """One random view of a uint8 (h, w, 3) image, as keras' ImageDataGenerator draws and applies it.

    Rotation, shift, shear and zoom are composed into one affine map about the image centre and
    applied with bilinear interpolation and nearest-edge fill; then an optional horizontal flip.
    Returns a uint8 array of the same shape.
    """
    draw = _Draw.of(policy, rng, *image.shape[:2])
    matrix = draw.matrix()
    out = image if np.allclose(matrix, np.eye(3)) else _warp(image, matrix)
    if draw.flip:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
