"""preset=best on workers: every stage of a staged tune runs on a worker that follows the chief,
one started by the chief and one started by hand. (A file of its own: pytest-xdist's loadfile runs
it beside test_distributed.py's tests, the longest file before.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.children import free_port
from tests.test_distributed import run_tune, sqlite_uri, start_chief
from tests.test_stages import best_overrides

pytestmark = pytest.mark.slow  # real worker processes and a real MLflow server


def test_a_staged_tune_runs_every_stage_on_a_worker_that_follows_it(overrides, tmp_path):
    """preset=best on workers: a chief that runs no trials and one worker started by hand with the
    command line's overrides. The worker runs stage 1, then each search the chief links after it
    (stage 2 at another size under stage 1's best head, then a ladder rung), with the settings the
    chief published applied to its own config, and stops when the tune is over: every trial of
    every stage ran on it. (Before, a worker only knew stage 1, and the ladder was off on workers.)"""
    ladder = [
        *("finetune_stage.ladder=true", "finetune_stage.augmentation=[none]"),
        *("finetune_stage.ladder_gain.learning_rate=0", "finetune_stage.ladder_gain.blocks=0"),
        "finetune_stage.ladder_bounds.block_lr=[0.1,0.2]",  # one rung: block_lr 0.2
    ]
    args = best_overrides(overrides, "tuner.max_minutes=10", *ladder)
    here = tmp_path / "local"  # (its own work_dir and store)
    here.mkdir()
    moved = [*args, f"work_dir={here / 'work'}", f"tracking.uri={sqlite_uri(here)}", "tuner.workers=1"]
    local = run_tune([sys.executable, "-m", "fashion_exp", "tune", *moved], here, timeout=600)
    assert local.returncode == 0, local.stdout[-2000:] + local.stderr[-3000:]
    assert local.stdout.count("Started 1 workers") == 3  # each search's own (tune-worker --search <id>)
    # all forked from one template that imported TensorFlow once for the whole tune (search/spawner.py)
    assert local.stdout.count("Local workers fork from one process that imported their libraries once") == 1
    assert_every_stage_ran_on("worker-0", here / "mlflow.db")
    port = free_port()
    chief = start_chief(args, tmp_path, port)
    worker = [sys.executable, "-m", "fashion_exp", "tune-worker", "--chief", f"127.0.0.1:{port}", "--worker-id"]
    try:
        done = run_tune([*worker, "worker-0", *args], tmp_path, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert chief.wait(timeout=120) == 0, (tmp_path / "chief.log").read_text()[-3000:]
    finally:
        chief.kill()
    log = (tmp_path / "chief.log").read_text()
    assert "Stage 3 (ladder): block_lr 0.2 on [" in log and "ladder: not on workers" not in log
    assert done.stdout.count("The tune goes on with search") == 2, done.stdout[-3000:]
    assert_every_stage_ran_on("worker-0", tmp_path / "mlflow.db")


def assert_every_stage_ran_on(worker: str, store: Path) -> None:
    """Stages 1, 2 and 3 (a ladder rung) each a search with trials, every trial finished on `worker`."""
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    stages = {r.info.run_id: r.data.tags["fashion_exp.stage"] for r in runs if "fashion_exp.stage" in r.data.tags}
    trials = [r for r in runs if r.data.tags.get("fashion_exp.kind") == "trial"]
    assert sorted(set(stages.values())) == ["1", "2", "3"]
    assert {stages[t.data.tags["mlflow.parentRunId"]] for t in trials} == {"1", "2", "3"}
    assert {t.data.tags["fashion_exp.worker"] for t in trials} == {worker}
    assert all(t.info.status == "FINISHED" for t in trials)
