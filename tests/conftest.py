"""Shared fixtures: tiny synthetic datasets on tmp_path and configs that point every output there."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.synthetic import make_dataset

# One compute thread a process (TensorFlow's intra-op pool, and ONNX Runtime's and OpenVINO's, which
# the product sizes from the same variable): the pytest workers and their commands share 2 cores, and
# three workers with pools of two threads each spent a fifth more CPU waiting on each other
# (docs/results.md, "One compute thread a test process").
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(autouse=True)
def _tiny_steps_run_eagerly(request):
    """Keras' train and predict steps run eagerly in this process, except in the real-data tests:
    tracing a graph for the tiny backbone's few batches costs more than running them (a third of a
    search test's time). What the graph path proves is proved where the product runs as shipped: in
    every `python -m fashion_exp` process the tests start, and in the real-data tests."""
    if request.node.get_closest_marker("real") is not None:
        yield
        return
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(False)


@pytest.fixture(scope="session", autouse=True)
def _zygote_ends_with_the_session():
    """The zygote tests/zygote.py starts at this worker's first forked command, and every command
    still running in its session, end with the session."""
    yield
    from tests.zygote import Zygote

    Zygote.stop()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, made once: making one runs MLflow's schema migrations (about
    2.5 s here), which most tests need not repeat."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store_uri(tmp_path, mlflow_template) -> str:
    """tmp_path/mlflow.db as a copy of the empty template store (no migrations to run again)."""
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


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


# The files that take longest (seconds inside their tests, 2 cores, -n 3: benchmarks/bench_test_cpu.py's
# per-test spans summed by file, 2026-12-07), longest first. With --no-loadscope-reorder
# (pyproject.toml) pytest-xdist hands out whole files in collection order, so these start first and
# the many quick files fill the gaps at the end; its default order (files with the most tests first)
# left the real-data and process tests to the last minutes, one worker running alone for about two.
LONGEST_FILES = (
    "test_concurrency.py",  # 204 s
    "test_stages.py",  # 197
    "test_distributed.py",  # 194
    "test_real.py",  # 167
    "test_readme_workflow.py",  # 118
    "test_distributed_stages.py",  # 92
    "test_signals.py",  # 88
    "test_distributed_kill.py",  # 80
    "test_search.py",  # 68
    "test_finetune.py",  # 62
    "test_serve.py",  # 52
    "test_oracle_auth.py",  # 48
    "test_start.py",  # 46
    "test_final.py",  # 44
)


def pytest_collection_modifyitems(config, items):
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: the rest keep their order)
