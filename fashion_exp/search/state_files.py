"""keras-tuner's state files (oracle.json, trial.json, ...), written so a killed process never leaves
one half-written.

keras-tuner writes each JSON file in place; a `kill -9` of the chief in the middle of a write left an
empty oracle.json and a search that could not resume. Every keras-tuner state file goes through
`keras_tuner.src.utils.save_json`, which keras_tuner_fixes.install() replaces with
save_json_atomically: a write to a temporary file beside the target and an atomic rename over it,
so a reader sees the old file or the new one, never a part.

The temporary file is named for its writer, `.<file>.<pid>-<thread>@<host>.partial`, so that a
process resuming the search can delete those a killed writer left. Whether a pid is alive can only
be told on its own machine, and work_dir may be shared with other machines (docs/distributed.md,
"Shared file systems"): only this host's files are judged.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

from keras_tuner.src import utils as kt_utils

from fashion_exp.errors import UserError, first_line
from fashion_exp.writers import FULL, HOST, disk_full, sweep_paths

STOCK_SAVE_JSON = kt_utils.save_json
# .<file>.<pid>-<thread>@<host>.partial; versions before the host was added wrote no @<host>
_PARTIAL = re.compile(r"^\..+\.(?P<pid>\d+)-\d+(?:@(?P<host>[A-Za-z0-9._-]+))?\.partial$")


def partial_path(target: Path, host: str, pid: int, thread: int) -> Path:
    """The temporary file beside `target` that writer `pid`/`thread` on `host` saves into."""
    return target.with_name(f".{target.name}.{pid}-{thread}@{host}.partial")


def save_json_atomically(path, obj) -> str:
    """keras-tuner's save_json (the JSON text of `obj` in `path`, returned) as an atomic replace."""
    if "://" in str(path):  # a remote file system (gs://...): keras-tuner's own writer
        return STOCK_SAVE_JSON(path, obj)
    text = json.dumps(obj)
    target = Path(path)
    # one per writer: the chief's oracle server thread saves too
    partial = partial_path(target, HOST, os.getpid(), threading.get_ident())
    try:
        with open(partial, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, target)
    except OSError as err:
        if err.errno not in FULL:
            raise
        raise disk_full(target, f"the search's state file {target.name}") from None  # (the old file stays whole)
    finally:
        partial.unlink(missing_ok=True)
    return text


def check_readable(project_dir: Path) -> None:
    """Raise a one-line UserError naming the first keras-tuner state file under `project_dir` that is
    not valid JSON (written by an older version killed mid-write, or a full disk)."""
    for path in sorted(Path(project_dir).rglob("*.json")):
        try:
            json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UserError(
                f"{path}: the saved search cannot be resumed, this file is unreadable ({first_line(err)}); "
                "run again with fresh=true to start the search over (its MLflow runs stay)"
            ) from None


def remove_stale_partials(project_dir: Path) -> list[Path]:
    """Delete the temporary files under `project_dir` that a writer on this host left when it died
    mid-save (a kill -9 between the write and the rename). Returns what was deleted.

    A live writer's file is left alone, and so is every other host's: its pid means nothing here,
    and a worker sharing work_dir over NFS may be writing it now. Names without a host (older
    versions) count as this host's, as those versions swept them.
    """
    return sweep_paths(Path(project_dir).rglob(".*.partial"), _PARTIAL)
