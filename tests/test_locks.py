"""OS file locks against a real holder process: refusal names the holder, kill -9 frees the lock."""

import socket
import subprocess
import sys
import threading
import time

import pytest

from fashion_exp import locks
from tests.processes import kill_hard

HOLDER = """
import sys, time
from fashion_exp import locks
path, seconds = sys.argv[1], float(sys.argv[2])
sys.argv = ["fashion_exp", *sys.argv[3:]]  # the command the lock file records
with locks.exclusive(path, "the thing"):
    print("held", flush=True)
    time.sleep(seconds)
"""


def hold(path, seconds: float = 120) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds), "tune", "seed=7"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_held_lock_is_refused_in_one_line_naming_the_holder(tmp_path):
    path = tmp_path / "locks" / "search.lock"
    holder = hold(path)
    try:
        with pytest.raises(locks.Busy) as refused:
            with locks.exclusive(path, "search abc", hint="wait for it"):
                pytest.fail("two processes held one lock")
        message = str(refused.value)
        assert message.startswith("search abc is in use by pid ")
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert "(tune seed=7)" in message and message.endswith(": wait for it") and "\n" not in message
        assert refused.value.holder.pid == holder.pid
    finally:
        kill_hard(holder)


def test_kill_9_of_the_holder_frees_the_lock(tmp_path):
    path = tmp_path / "search.lock"
    holder = hold(path)
    kill_hard(holder)  # no cleanup code runs; the lock file stays, naming the dead process
    assert locks.read_holder(path).pid == holder.pid
    with locks.exclusive(path, "search abc") as me:  # at once: the kernel dropped the dead process's lock
        assert locks.read_holder(path) == me
    assert locks.read_holder(path) is None  # released: names nobody
    assert path.exists()  # never deleted (a waiter may have it open)


def test_waiting_takes_the_lock_when_the_holder_ends(tmp_path):
    path = tmp_path / "fetch.lock"
    holder = hold(path, seconds=1.5)
    seen = []
    started = time.monotonic()
    with locks.exclusive(path, "the download", wait=60, on_wait=seen.append):
        waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert [h.pid for h in seen] == [holder.pid]  # told once whom it waits for
    assert waited > 0.5  # it really waited for the holder's sleep


def test_waiting_has_a_limit(tmp_path):
    path = tmp_path / "store.lock"
    holder = hold(path)
    try:
        with pytest.raises(locks.Busy, match=r"in use by pid \d+ .* \(waited 0.5 s\)"):
            with locks.exclusive(path, "the store", wait=0.5):
                pass
    finally:
        kill_hard(holder)


def test_threads_of_one_process_exclude_each_other(tmp_path):
    """flock belongs to an open file, so two opens in one process exclude each other too."""
    path = tmp_path / "x.lock"
    inside, overlaps = [], []

    def work():
        with locks.exclusive(path, "x", wait=30):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1, 1]


def test_an_unwritable_lock_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(locks.UserError, match=r"cannot create the lock file .*file/x.lock for search abc"):
        with locks.exclusive(blocker / "x.lock", "search abc"):
            pass


def test_a_short_wait_says_nothing(tmp_path):
    """A wait shorter than quiet_for (a store being opened for a moment) prints no 'waiting for'."""
    path = tmp_path / "store.lock"
    holder = hold(path, seconds=0.5)
    seen = []
    with locks.exclusive(path, "the store", wait=60, on_wait=seen.append, quiet_for=30):
        pass
    holder.wait(timeout=30)
    assert seen == []
