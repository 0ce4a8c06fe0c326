"""Shared fixtures: tiny synthetic datasets on tmp_path and configs that point every output there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.synthetic import make_dataset


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def overrides(tmp_path, dataset_root) -> list[str]:
    """Overrides for a seconds-long search on the synthetic data with the tiny backbone."""
    return [
        f"data.root={dataset_root}",
        "data.image_size=32",
        "model=tiny",
        f"work_dir={tmp_path / 'work'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.experiment=test",
        "tuner.max_trials=2",
        "tuner.epochs=3",
        "tuner.batch_size=8",
        "augmentation.shear_zoom_flip.views=2",
    ]


@pytest.fixture(autouse=True)
def _artifacts_in_tmp(tmp_path, monkeypatch):
    """MLflow's default artifact root is ./mlruns: run every test from its own tmp_path."""
    monkeypatch.chdir(tmp_path)
