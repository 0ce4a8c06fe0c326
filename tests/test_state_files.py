"""keras-tuner's state files survive a kill mid-write, and an unreadable one is refused in one line."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.cli import main
from fashion_exp.config import load_config
from fashion_exp.search.run import run_search
from fashion_exp.search.state_files import HOST, partial_path, remove_stale_partials

# A child that saves a keras-tuner state twice through keras-tuner's own writer, after fashion_exp's
# install(), and is killed in the second save: its new text is written, not yet in place. With a
# second argument it names itself that host: a worker on another machine that shares work_dir.
WRITER = """
import os, socket, sys, time
if len(sys.argv) > 2:
    socket.gethostname = lambda: sys.argv[2]
from keras_tuner.src import utils
from fashion_exp.search import keras_tuner_fixes
keras_tuner_fixes.install()
replace = os.replace
def replace_then_hang(*args):
    print("new state written, not yet in place", flush=True)
    time.sleep(600)
utils.save_json(sys.argv[1], {"trials": list(range(1000)), "n": 0})
os.replace = replace_then_hang
utils.save_json(sys.argv[1], {"trials": [], "n": 1})
"""


def kill_mid_save(path: Path, *host: str) -> None:
    """Run WRITER on `path` (as `host`, if given) and kill -9 it between its write and its rename."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), *host], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "new state written, not yet in place"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()


def finished_pid() -> int:
    """The pid of a process that has ended (not reused within a test)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.slow  # a real process
def test_a_kill_9_mid_save_leaves_the_last_whole_state(tmp_path):
    path = tmp_path / "oracle.json"
    kill_mid_save(path)
    assert json.loads(path.read_text()) == {"trials": list(range(1000)), "n": 0}  # whole, never a part
    assert [p.name for p in tmp_path.glob("*.json")] == ["oracle.json"]  # a partial is not taken for state

    (left,) = tmp_path.glob(f".oracle.json.*@{HOST}.partial")  # the dead writer's temporary file, named for this host
    live = tmp_path / f".trial.json.{os.getpid()}-1.partial"  # a live writer's, mid-save
    live.write_text("{")
    odd = tmp_path / ".notes.partial"  # not a name the writer makes: not ours to delete
    odd.write_text("")
    assert remove_stale_partials(tmp_path) == [left]
    assert not left.exists() and live.exists() and odd.exists()
    assert json.loads(path.read_text())["n"] == 0


@pytest.mark.slow  # a real process
def test_a_dead_pid_on_another_host_does_not_get_its_partial_deleted(tmp_path):
    """work_dir shared over NFS: a worker on machine B is mid-save; its pid is not a process on this
    machine, so a chief resuming here must not take its temporary file for a dead writer's."""
    kill_mid_save(tmp_path / "oracle.json", "machine-b" if HOST != "machine-b" else "machine-c")
    (theirs,) = tmp_path.glob(".oracle.json.*.partial")
    assert remove_stale_partials(tmp_path) == []
    assert theirs.exists()


def test_the_sweep_deletes_only_this_hosts_dead_writers_files(tmp_path):
    target, dead = tmp_path / "oracle.json", finished_pid()
    other = "machine-b" if HOST != "machine-b" else "machine-c"
    mine_dead = partial_path(target, HOST, dead, 7)  # a writer here killed mid-save
    mine_live = partial_path(target, HOST, os.getpid(), 7)  # a writer here mid-save now
    theirs = partial_path(target, other, dead, 7)  # another machine's writer: its pid means nothing here
    older = tmp_path / f".trial.json.{dead}-7.partial"  # written before names carried a host: this host's
    for path in (mine_dead, mine_live, theirs, older):
        path.write_text("{")
    assert remove_stale_partials(tmp_path) == sorted([mine_dead, older])
    assert mine_live.exists() and theirs.exists()


def test_an_unreadable_saved_search_is_refused_in_one_line_and_its_run_is_untouched(overrides, capsys):
    config = load_config(overrides)
    result = run_search(config)
    oracle = next((Path(config.work_dir) / "tuner").glob("*/oracle.json"))
    oracle.write_text("")  # what keras-tuner's own writer left when the chief was killed mid-write

    capsys.readouterr()
    assert main(["tune", *overrides]) == 2
    err = capsys.readouterr().err  # the dataset check's progress bars, then the refusal
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert str(oracle) in errors[0] and "fresh=true" in errors[0]
    parent = MlflowClient(config.tracking.uri).get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"  # not reopened, not marked failed

    assert main(["tune", *overrides, "fresh=true"]) == 0  # the remedy the message gives works
    assert json.loads(oracle.read_text())

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = oracle.with_name(f".oracle.json.{gone.stdout.strip()}-7.partial")  # a writer killed mid-save
    stale.write_text("{")
    assert main(["tune", *overrides]) == 0  # resuming tidies it away
    assert not stale.exists() and json.loads(oracle.read_text())
