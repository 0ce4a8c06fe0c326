"""OS file locks against a real holder process: refusal names the holder, kill -9 frees the lock;
lock files cannot be turned against their user (symlinks, other users' folders) and hold no password."""

import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from fashion_exp import locks
from fashion_exp.errors import UserError
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


def hold(path, seconds: float = 120, words: tuple[str, ...] = ("tune", "seed=7")) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds), *words],
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


def take_unnamed(path):
    """A holder caught between its lock and its record: the lock taken, the lock file still empty."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


@pytest.mark.parametrize("writes_its_record", [True, False])
def test_a_waiter_names_a_holder_that_writes_its_record_late(tmp_path, monkeypatch, writes_its_record):
    """Two fetches at once on a loaded machine: the second found the lock taken before the first had
    written who it is, and said "Waiting for another process". It looks again until the record is
    there (a holder that never writes one is 'another process' after the grace)."""
    monkeypatch.setattr(locks, "HOLDER_GRACE_SECONDS", 3.0 if writes_its_record else 0.3)
    path = tmp_path / "fetch.lock"
    fd = take_unnamed(path)

    def holder():
        time.sleep(0.6)
        if writes_its_record:
            locks._write_holder(fd, path)
        time.sleep(0.6 if writes_its_record else 0.2)
        os.close(fd)

    thread = threading.Thread(target=holder)
    thread.start()
    seen = []
    with locks.exclusive(path, "the download", wait=60, on_wait=seen.append):
        pass
    thread.join()
    assert [h and h.pid for h in seen] == [os.getpid() if writes_its_record else None]


@pytest.mark.parametrize("writes_its_record", [True, False])
def test_a_refusal_names_a_holder_that_writes_its_record_late(tmp_path, monkeypatch, writes_its_record):
    """Two identical tunes at once beside a busy loop: the second, which refuses at once (wait=0),
    found the lock taken before the first had written who it is and said "in use by another
    process". It looks again for the grace (a holder that never writes one is 'another process')."""
    monkeypatch.setattr(locks, "HOLDER_GRACE_SECONDS", 3.0 if writes_its_record else 0.3)
    path = tmp_path / "search.lock"
    fd = take_unnamed(path)
    if writes_its_record:
        threading.Timer(0.6, locks._write_holder, (fd, path)).start()
    try:
        with pytest.raises(locks.Busy) as refused:
            with locks.exclusive(path, "search abc"):
                pass
    finally:
        time.sleep(0.7)  # (the timer has written the record)
        os.close(fd)
    named = f"in use by pid {os.getpid()} " if writes_its_record else "in use by another process"
    assert named in str(refused.value)


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


# ---- lock files are not a way into someone's files, nor a password's hiding place -------------------

SERVER_STORE = "postgresql://mlflow:s3cret@db.example:5432/mlflow"  # its store locks go to the temp folder


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def temp_folder(tmp_path, monkeypatch):
    """A temp folder like /tmp (sticky, everyone may write) inside tmp_path, as tempfile's default."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    folder.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_a_symlink_planted_at_a_store_lock_is_refused_and_its_target_untouched(temp_folder, tmp_path):
    from fashion_exp.tracking import store

    victim = tmp_path / "victim.txt"
    victim.write_text("someone's precious file\n")
    path = store.lock_path(SERVER_STORE, "aliases")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(victim)
    with pytest.raises(UserError) as refused:
        with store.alias_lock(SERVER_STORE, "m"):
            pytest.fail("took a lock through a planted symlink")
    message = str(refused.value)
    assert str(path) in message and "symbolic link" in message and "\n" not in message
    assert victim.read_text() == "someone's precious file\n" and mode(victim) == 0o644


def test_a_symlink_at_a_lock_in_a_shared_folder_is_not_followed(tmp_path):
    """work_dir may sit on a shared file system: a lock there meets the same planted link."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "work" / "tuner" / "search.lock"
    path.parent.mkdir(parents=True)
    path.symlink_to(victim)
    with pytest.raises(UserError, match=r"^the lock file .*search\.lock for search abc is a symbolic link"):
        with locks.exclusive(path, "search abc"):
            pytest.fail("followed the link")
    assert victim.read_text() == "precious"


def test_a_hard_link_at_a_lock_path_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "search.lock"
    os.link(victim, path)
    with pytest.raises(UserError, match=r"^the lock file .*search\.lock for search abc has other names"):
        with locks.exclusive(path, "search abc"):
            pytest.fail("wrote into a file with another name")
    assert victim.read_text() == "precious"


def test_store_locks_live_in_a_folder_only_this_user_can_enter(temp_folder):
    from fashion_exp.tracking import store

    with store.alias_lock(SERVER_STORE, "m"):
        path = store.lock_path(SERVER_STORE, "aliases")
        assert path.parent == temp_folder / f"fashion_exp-locks-{os.geteuid()}"
        assert mode(path.parent) == 0o700 and os.lstat(path.parent).st_uid == os.geteuid()
        assert mode(path) == 0o600 and locks.read_holder(path).pid == os.getpid()


def test_a_lock_file_is_private_even_when_it_was_made_public_before(tmp_path):
    path = tmp_path / "search.lock"
    path.write_text("")
    path.chmod(0o666)  # as an older fashion_exp (0644) or another tool left it
    with locks.exclusive(path, "search abc"):
        assert mode(path) == 0o600


def test_a_lock_folder_others_can_write_is_refused(temp_folder):
    from fashion_exp.tracking import store

    folder = temp_folder / f"fashion_exp-locks-{os.geteuid()}"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(UserError) as refused:
        with store.alias_lock(SERVER_STORE, "m"):
            pytest.fail("locked in a folder anyone can write")
    message = str(refused.value)
    assert str(folder) in message and "chmod 700" in message and "\n" not in message
    assert list(folder.iterdir()) == []


def test_a_symlink_in_place_of_the_lock_folder_is_refused(temp_folder, tmp_path):
    from fashion_exp.tracking import store

    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir(mode=0o700)
    folder = temp_folder / f"fashion_exp-locks-{os.geteuid()}"
    folder.symlink_to(elsewhere)
    with pytest.raises(UserError, match=r"lock folder .* is a symbolic link"):
        with store.alias_lock(SERVER_STORE, "m"):
            pytest.fail("locked in a linked folder")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_lock_folder_of_another_user_is_refused(temp_folder):
    from fashion_exp.tracking import store

    folder = temp_folder / f"fashion_exp-locks-{os.geteuid()}"
    folder.mkdir(mode=0o700)
    os.chown(folder, 4242, 4242)  # made first by someone else, to catch our locks
    with pytest.raises(UserError) as refused:
        with store.alias_lock(SERVER_STORE, "m"):
            pytest.fail("locked in another user's folder")
    message = str(refused.value)
    assert str(folder) in message and "uid 4242" in message and "\n" not in message
    assert list(folder.iterdir()) == []


def test_the_holder_line_hides_the_password_of_a_store_uri(tmp_path):
    path = tmp_path / "search.lock"
    holder = hold(path, words=("promote", f"tracking.uri={SERVER_STORE}", "final.registered_model=m"))
    try:
        written = path.read_text()
        assert "s3cret" not in written and "mlflow:***@db.example:5432/mlflow" in written
        assert mode(path) == 0o600
        with pytest.raises(locks.Busy) as refused:
            with locks.exclusive(path, "the aliases of 'm'"):
                pytest.fail("two processes held one lock")
        assert "s3cret" not in str(refused.value) and "tracking.uri=postgresql://mlflow:***@" in str(refused.value)
    finally:
        kill_hard(holder)


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /shared rw,relatime shared:40 - nfs4 fs:/export rw,vers=4.2,hard,local_lock=none,addr=10.0.0.2
91 22 0:51 / /shared/fast rw,relatime shared:41 - nfs fs:/fast rw,vers=3,nolock,hard,addr=10.0.0.2
92 22 0:52 / /mnt/with\\040space rw - nfs4 fs:/x rw,vers=4.1,local_lock=flock
"""


@pytest.mark.parametrize(
    ("work_dir", "says"),
    [
        ("/shared/fast/work", "NFS mount (/shared/fast) with nolock"),  # the deepest mount above it
        ("/mnt/with space/w", "with local_lock=flock"),
        ("/shared/work", None),  # NFS with the server's locks: fine
        ("/home/me/work", None),  # a local disk
    ],
)
def test_a_work_dir_on_nfs_whose_locks_stay_local_is_said_in_one_line(work_dir, says):
    from fashion_exp.mounts import local_locks_warning

    line = local_locks_warning(work_dir, MOUNTINFO)
    if says is None:
        assert line is None
    else:
        assert says in line and line.startswith(f"warning: work_dir {work_dir} is on an NFS mount") and "\n" not in line


def test_writers_are_named_by_host_and_pid_namespace():
    """Containers sharing a network namespace share a host name: a pid is judged only where its
    pid namespace is (the sweep of dead writers' files, the locks' holder records)."""
    import socket

    from fashion_exp import locks, writers

    hostname, namespace = writers.HOST.rsplit(".", 1)
    assert hostname == re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
    assert len(namespace) == 8 and int(namespace, 16) >= 0  # (a hash of the boot id and the pid namespace)
    assert locks.Holder.me().host == writers.HOST


def test_a_command_waits_for_a_held_store_lock_as_long_as_tracking_lock_wait_s(temp_folder, monkeypatch):
    """The store's lock waits are a config key (issue 37, item 4): a command sets it, and a holder
    that outlasts it is named in one line."""
    from fashion_exp import cli
    from fashion_exp.tracking import store

    monkeypatch.setattr(store, "_wait_s", store._wait_s)  # (restored after the test)
    job = cli.Command(lambda config, args, overrides: 0, tensorflow=False)
    assert cli.run_command(job, None, ["tracking.lock_wait_s=0.5"]) == 0
    with store.alias_lock(SERVER_STORE, "m"):
        started = time.monotonic()
        with pytest.raises(locks.Busy) as busy:
            with store.alias_lock(SERVER_STORE, "m"):
                pytest.fail("took a lock this process holds")
        waited = time.monotonic() - started
    assert 0.5 <= waited < 30  # it waited, and not the default's 300 s
    message = str(busy.value)
    assert f"pid {os.getpid()}" in message and "\n" not in message
    with pytest.raises(UserError, match=r"^tracking\.lock_wait_s: 0\.0 must be a number of seconds > 0$"):
        cli.run_command(job, None, ["tracking.lock_wait_s=0"])
