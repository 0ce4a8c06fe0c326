"""The real path, a search on two workers: clothing-dataset-small and the real Xception ImageNet
weights from ../shared. (A file of its own: pytest-xdist's loadfile runs it beside test_real.py.)"""

from tests.synthetic import REAL_DATA, REAL_WEIGHTS
from tests.test_real import REAL

pytestmark = REAL


def test_real_search_on_two_workers(tmp_path):
    """tune tuner.workers=2 on real photos and weights: the workers share the extraction, run the
    trials, and the chief's parent run holds one child per trial with its worker's tag."""
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [
        f"data.root={REAL_DATA}",
        f"model.weights={REAL_WEIGHTS}",
        "data.limit_per_class=10",
        "data.image_size=100",
        f"work_dir={tmp_path / 'work'}",
        f"tracking.uri={uri}",
        "tuner.max_trials=2",
        "search.learning_rate.values=[0.001]",
        "search.size_inner.values=[0,100]",
        "search.droprate.values=[0.2]",
        "search.augmentation.values=[none]",
        "model.runtime=tensorflow",
        "tuner.workers=2",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "fashion_exp", "tune", *overrides],
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fashion-classifier-search").experiment_id])
    parents = [r for r in runs if r.data.tags.get("fashion_exp.kind") == "search"]
    trials = [r for r in runs if r.data.tags.get("fashion_exp.kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["size_inner"] for r in trials) == ["0", "100"]
    assert {r.data.tags["fashion_exp.worker"] for r in trials} <= {"worker-0", "worker-1"}
    assert parents[0].data.metrics["val_accuracy"] >= 0.4  # chance is 0.10; 10 photos per class at 100px
