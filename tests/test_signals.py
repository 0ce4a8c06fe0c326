"""SIGTERM (how Slurm, systemd, Docker and Kubernetes stop a job) is handled as Ctrl-C: the runs the
command had open are marked KILLED, nothing is left RUNNING, and the same command resumes."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient
from tqdm import tqdm

from fashion_exp import screen, signals
from fashion_exp.config import load_config
from fashion_exp.tracking.tags import KIND, TRIAL_ID
from tests import zygote
from tests.processes import training_trial


def start_tune(overrides, cwd, *more):
    command = [sys.executable, "-m", "fashion_exp", "tune", *overrides, *more]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return zygote.popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process, prefix: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if line.startswith(prefix):
            return
        assert time.monotonic() < deadline, f"no line starting {prefix!r} in {timeout} s"
    raise AssertionError(f"exited ({process.wait()}) before printing {prefix!r}: {process.stderr.read()[-2000:]}")


def statuses(uri: str) -> list[str]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return sorted(run.info.status for run in client.search_runs(experiments))


@pytest.mark.slow  # real processes and real signals
@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_marks_the_runs_killed_and_the_rerun_resumes(overrides, tmp_path, workers):
    config = load_config(overrides)
    more = ["tuner.max_trials=2", "tuner.epochs=100", f"tuner.workers={workers}"]
    running = start_tune(overrides, tmp_path, *more)
    wait_for_line(running, "Started search")
    # into the first trial (the worker's, with workers=1): its run has logged an epoch; 100 epochs
    # are about 10 s alone and longer on a loaded machine, so the signal lands mid-trial (with 40,
    # a fresh-clone CI beside a busy loop once saw the tune end before its SIGTERM was sent)
    trial = training_trial(config.tracking.uri, running)
    running.send_signal(signal.SIGTERM)
    _, err = running.communicate(timeout=120)
    assert running.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM: run the same command again to resume where it stopped" in err
    assert "Traceback" not in err
    found = statuses(config.tracking.uri)
    assert "RUNNING" not in found and "KILLED" in found, found
    killed = MlflowClient(config.tracking.uri).get_run(trial)
    assert killed.info.status == "KILLED"  # stopped mid-trial
    # the rerun (max_trials is where a search stops, not what it is: the same search) retries the
    # killed trial before any new one, so max_trials=1 runs just that trial again, to its end
    rerun = start_tune(overrides, tmp_path, *more[1:], "tuner.max_trials=1")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert "Resuming search" in out
    assert "RUNNING" not in statuses(config.tracking.uri)
    assert trial_statuses(config.tracking.uri) == {killed.data.tags[TRIAL_ID]: "FINISHED"}


def trial_statuses(uri: str) -> dict[str, str]:
    """Each trial run's status, by its keras-tuner trial id."""
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{KIND}` = 'trial'")
    return {run.data.tags[TRIAL_ID]: run.info.status for run in runs}


def test_a_signal_inside_a_store_call_is_raised_as_the_call_ends():
    """SIGTERM that lands inside an MLflow client call (a database write) waits for the call to end:
    raised in the middle, it left the SQLite transaction open and marking the runs KILLED then
    failed with 'database is locked'."""
    calls = []

    class Store:
        def write(self, value):
            os.kill(os.getpid(), signal.SIGTERM)  # delivered here, in the middle of the write
            time.sleep(0.05)  # Python runs handlers between bytecodes: give it some
            calls.append(value)
            return value

    client = signals.DeferringClient(Store())
    before = signal.getsignal(signal.SIGTERM)
    with signals.as_interrupts():
        with pytest.raises(signals.Terminated):
            client.write(1)
        assert calls == [1]  # the write completed before Terminated was raised
        with pytest.raises(signals.Terminated):
            Store().write(2)  # outside a store call it is raised at once
        assert calls == [1]
    assert signal.getsignal(signal.SIGTERM) is before  # put back


def test_ctrl_c_inside_a_store_call_is_deferred_too():
    class Store:
        def write(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            return "written"

    with signals.as_interrupts(), pytest.raises(KeyboardInterrupt) as caught:
        signals.DeferringClient(Store()).write()
    assert not isinstance(caught.value, signals.Terminated)


def test_a_signal_that_lands_in_a_finaliser_is_not_lost():
    """Python discards what a __del__ (or a weakref callback) raises ("Exception ignored in"): a
    SIGTERM delivered there was lost and the search ran on to its end with exit 0."""

    class Garbage:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, inside __del__

    with signals.as_interrupts(), pytest.raises(signals.Terminated):
        Garbage()  # collected at once
        for _ in range(100):
            time.sleep(0.01)  # ordinary code: the stop is raised here


def test_a_redelivered_stop_that_lands_before_the_hook_returns_is_delivered_again(monkeypatch):
    """The stop a finaliser swallowed is sent again from a timer thread; on a loaded machine
    (CI beside a busy loop) it landed while the main thread was still in the hook, waiting for that
    thread to start, and was discarded there: the search ran on. A slow first start stands in for the load."""
    starts = []

    class SlowFirstStart(threading.Timer):
        def start(self):
            super().start()
            if not starts:
                starts.append(self)
                time.sleep(0.2)  # the timer fires (after 0.01 s) before this start returns

    class Garbage:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)

    monkeypatch.setattr(signals.threading, "Timer", SlowFirstStart)
    with signals.as_interrupts(), pytest.raises(signals.Terminated):
        Garbage()
        for _ in range(100):
            time.sleep(0.01)


STOPS = [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, signals.Terminated)]


@pytest.mark.parametrize("number, stop", STOPS, ids=["Ctrl-C", "SIGTERM"])
@pytest.mark.parametrize("first_line", [True, False], ids=["first line", "later line"])
def test_a_stop_that_lands_inside_a_line_being_written_is_not_lost(monkeypatch, number, stop, first_line):
    """A Ctrl-C that landed while tqdm.write made its lock (the first line a process says) was turned
    by tqdm's cleanup into AttributeError, which logging's rule swallows: `ui` served on after Ctrl-C
    (the README test's ui did not stop within 60 s on a loaded machine)."""
    original = tqdm.get_lock.__func__

    def get_lock(cls):
        os.kill(os.getpid(), number)
        time.sleep(0.05)  # the handler runs here, inside tqdm.write, before the lock is taken
        return original(cls)

    if first_line:
        monkeypatch.delattr(tqdm, "_lock", raising=False)  # as in a fresh process
    else:
        tqdm.get_lock()
    monkeypatch.setattr(tqdm, "get_lock", classmethod(get_lock))
    monkeypatch.setattr(screen.LOGGER, "handlers", [])  # show()'s handler, for this test only
    level = screen.LOGGER.level
    try:
        screen.show()
        with signals.as_interrupts(), pytest.raises(stop):
            screen.say("a line")
    finally:
        screen.LOGGER.setLevel(level)


def test_a_line_said_while_a_stop_is_handled_does_not_raise_that_stop_again(monkeypatch):
    """A line that cannot be written (a pipe closed by the same Ctrl-C) while a command cleans up
    after Ctrl-C: the broken write's context is the Ctrl-C being handled, which is not a new stop."""

    def broken(*args, **kwargs):
        raise BrokenPipeError("the pipe's reader is gone")

    monkeypatch.setattr(tqdm, "write", broken)
    monkeypatch.setattr(screen.LOGGER, "handlers", [])
    monkeypatch.setattr(logging, "raiseExceptions", False)  # (logging's own report of the broken line)
    level = screen.LOGGER.level
    cleaned = []
    try:
        screen.show()
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            try:
                screen.say("marking the runs KILLED")
            except KeyboardInterrupt:
                cleaned.append("the handled Ctrl-C raised again: cleanup cut short")
            else:
                cleaned.append("cleaned up")
    finally:
        screen.LOGGER.setLevel(level)
    assert cleaned == ["cleaned up"]
