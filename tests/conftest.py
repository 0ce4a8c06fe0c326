"""Shared fixtures: tiny synthetic datasets on tmp_path and configs that point every output there."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tests.synthetic import make_dataset


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, made once: making one runs MLflow's schema migrations (about
    2.5 s here), which most tests need not repeat."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def overrides(tmp_path, dataset_root, mlflow_template, request) -> list[str]:
    """Overrides for a seconds-long search on the synthetic data with the tiny backbone. The store
    starts as a copy of the empty template, unless the test is marked fresh_store (it is about
    creating a store)."""
    if request.node.get_closest_marker("fresh_store") is None:
        shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return search_overrides(tmp_path, dataset_root)


def search_overrides(folder: Path, dataset_root: Path) -> list[str]:
    return [
        f"data.root={dataset_root}",
        "data.image_size=32",
        "model=tiny",
        f"work_dir={folder / 'work'}",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
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


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]):
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def said():
    """The lines the product says (fashion_exp/screen.py) during the test, in order."""
    from fashion_exp import screen

    lines: list[str] = []
    handler, level = _Lines(lines), screen.LOGGER.level
    screen.LOGGER.addHandler(handler)
    screen.LOGGER.setLevel(logging.INFO)
    yield lines
    screen.LOGGER.removeHandler(handler)
    screen.LOGGER.setLevel(level)
