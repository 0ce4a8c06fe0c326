"""A full disk is a one-line error naming the folder and the bytes, not SIGBUS; a dead writer's
temporary file is swept (issue 26, item 7). On a real 2 MB tmpfs, in a separate process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_exp.features.cache import FeatureCache
from fashion_exp.writers import HOST

FILL = """
import numpy as np, sys
from fashion_exp.features.cache import FeatureCache, FeatureKey
from fashion_exp.errors import UserError
key = FeatureKey("w", "d", "train", "f", "identity", 0, 0)
try:
    with FeatureCache(sys.argv[1]).writing(key, (1000, 1000)) as array:  # 4 MB of float32
        for row in range(1000):
            array[row] = 1.0
except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_a_one_line_error_and_leaves_no_file(small_disk):
    cache = small_disk / "features"
    done = subprocess.run([sys.executable, "-c", FILL, str(cache)], capture_output=True, text=True)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])  # it was -7 (SIGBUS)
    assert done.stderr.startswith(f"error: work_dir {cache}: the disk is full") and done.stderr.count("\n") == 1
    assert "a feature cache entry needs 4.0 MB and" in done.stderr and "MB are free" in done.stderr
    assert list(cache.iterdir()) == []  # no temporary file left behind


def test_a_dead_writers_temporary_file_is_swept_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    names = {
        "dead": f".train-x.npy.{pid}@{HOST}.tmp",
        "old_dead": f".train-y.npy.{pid}.tmp",  # named before the host was added
        "alive": f".train-z.npy.{os.getpid()}@{HOST}.tmp",
        "elsewhere": f".train-w.npy.{pid}@another-machine.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x" * 100)
    FeatureCache(tmp_path)
    left = {path.name for path in Path(tmp_path).iterdir()}
    assert left == {names["alive"], names["elsewhere"]}


def test_a_full_disk_while_writing_a_lock_or_a_state_file_is_one_line_and_the_rerun_goes_on(small_disk):
    """Out of space while writing a lock's holder record or a keras-tuner state file: one line
    (exit 2 at the command line), nothing half-written, and once space is freed both work."""
    from fashion_exp import locks
    from fashion_exp.errors import UserError
    from fashion_exp.search.state_files import save_json_atomically

    state = small_disk / "oracle.json"
    save_json_atomically(state, {"trials": 1})
    lock = small_disk / "search.lock"
    lock.touch()
    filler = small_disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # every block of the 2 MB disk
        while os.write(descriptor, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)
    with pytest.raises(UserError) as err, locks.exclusive(lock, "search x"):
        pass
    assert "the disk is full" in str(err.value) and "a lock's holder record" in str(err.value)
    assert "\n" not in str(err.value) and lock.read_text() == ""  # no half record
    with pytest.raises(UserError) as err:
        save_json_atomically(state, {"trials": 2, "more": "x" * 8192})
    assert "state file oracle.json" in str(err.value) and "\n" not in str(err.value)
    assert json.loads(state.read_text()) == {"trials": 1}  # the old state, whole
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "oracle.json", "search.lock"]
    filler.unlink()  # space again: the same calls go on
    with locks.exclusive(lock, "search x"):
        save_json_atomically(state, {"trials": 2})
    assert json.loads(state.read_text()) == {"trials": 2}
    from fashion_exp.writers import size_text  # (sizes in the unit that shows them: "0.00 GB free" before)

    shown = [size_text(n) for n in (87, 312_000, 4_000_000, 1_950_000_000)]
    assert shown == ["87 bytes", "312 KB", "4.0 MB", "1.95 GB"]
