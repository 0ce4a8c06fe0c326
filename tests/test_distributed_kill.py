"""kill -9 in a distributed search, for real: of a worker mid-trial (the chief starts it again and
its trial reruns) and of the chief (its workers and MLflow server go with it; the rerun resumes).
(A file of its own: pytest-xdist's loadfile runs it beside test_distributed.py's tests.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.processes import processes_naming
from tests.test_distributed import (
    assert_one_distributed_search,
    gone_within,
    run_tune,
    running_trial,
    search_runs,
    sqlite_uri,
    start_tune,
    tune_command,
    wait_until,
    worker_pids,
)

pytestmark = pytest.mark.slow  # real worker processes and a real MLflow server


def test_kill_9_of_a_worker_mid_trial_reruns_its_trial(overrides, tmp_path):
    uri = sqlite_uri(tmp_path)
    chief = start_tune(tune_command(overrides, "tuner.max_trials=3", "tuner.epochs=30"), tmp_path)
    try:
        victim = wait_until(lambda: running_trial(uri), 240, "a running trial", chief)
        worker = victim.data.tags["fashion_exp.worker"]
        pid = wait_until(lambda: worker_pids(tmp_path).get(worker), 30, f"{worker}'s pid", chief)
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "tune-worker" in command_line and "tracking.uri=" not in command_line  # (ps shows it to all)
        os.kill(pid, signal.SIGKILL)
        assert chief.wait(timeout=400) == 0, (tmp_path / "chief.log").read_text()[-3000:]
    finally:
        chief.kill()
    log = (tmp_path / "chief.log").read_text()
    assert f"{worker} ended with signal 9 (SIGKILL); starting it again (1 of 2)" in log
    kids = assert_one_distributed_search(uri, trials=3)
    rerun = [k for k in kids if k.data.tags["fashion_exp.trial_id"] == victim.data.tags["fashion_exp.trial_id"]]
    assert len(rerun) == 1 and rerun[0].info.run_id != victim.info.run_id  # the killed attempt's run is gone
    assert rerun[0].data.tags["fashion_exp.worker"] == worker  # the oracle gave its trial back to it


def test_kill_9_of_the_chief_takes_its_workers_and_the_rerun_resumes(overrides, tmp_path):
    uri = sqlite_uri(tmp_path)
    command = tune_command(overrides, "tuner.max_trials=3", "tuner.epochs=20")
    chief = start_tune(command, tmp_path)
    try:
        # Both workers' pids from their lock records while both hold a trial (3 trials, 2 workers): once
        # the first trial ends, a worker with nothing left to run may exit before the kill, on a fast host.
        pids = wait_until(
            lambda: worker_pids(tmp_path) if len(worker_pids(tmp_path)) == 2 else None, 240, "2 workers", chief
        )
        wait_until(lambda: ended_in_oracle(tmp_path) or None, 240, "a trial the oracle ended", chief)
        wait_until(lambda: running_trial(uri), 240, "a running trial", chief)
        # the guard, its group leader and the server
        server = processes_naming(f"--artifact-root {(tmp_path / 'mlruns').as_uri()}")
        # Trials whose end the chief's oracle saved, read just before the kill. A trial whose MLflow
        # run ended but whose end had not reached the oracle yet is re-run by design (TrialHooks.on_trial_end).
        ended = ended_in_oracle(tmp_path)
        finished = {k.info.run_id for k in search_runs(uri)[1] if k.data.tags["fashion_exp.trial_id"] in ended}
        os.kill(chief.pid, signal.SIGKILL)
        chief.wait()
    finally:
        chief.kill()
    assert server, "the chief started no MLflow server for its workers"
    assert gone_within([*pids.values(), *server], 30), "workers or the MLflow server outlived the chief"
    rerun = run_tune(command, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Resuming search" in rerun.stdout
    kids = assert_one_distributed_search(uri, trials=3)
    assert len(finished) == len(ended)  # each ended trial had its one finished run
    assert finished <= {k.info.run_id for k in kids}  # trials the oracle had ended before the kill were not re-run


def ended_in_oracle(tmp_path: Path) -> set[str]:
    """Ids of the trials whose end the chief's oracle has saved (oracle.json's end_order)."""
    found = list((tmp_path / "work" / "tuner").glob("*/oracle.json"))
    return set(json.loads(found[0].read_text())["end_order"]) if found else set()
