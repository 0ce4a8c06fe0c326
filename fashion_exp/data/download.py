"""fetch-data: download clothing-dataset-small as a zip and unpack it where data.root points."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from fashion_exp import locks
from fashion_exp.data.dataset import TEST, TRAIN, VALIDATION
from fashion_exp.errors import DataError
from fashion_exp.screen import say

SPLITS = (TRAIN, VALIDATION, TEST)


def has_dataset(root: Path) -> bool:
    return all((root / split).is_dir() for split in SPLITS)


def _download(url: str, target: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="Downloading dataset") as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as err:
        raise DataError(f"could not download {url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(
            f"could not download {url} ({reason}); download and unzip it by hand, then set FASHION_DATA"
        ) from None


def _dataset_dir(extracted: Path) -> Path:
    """The folder inside an unpacked archive that holds train/, validation/ and test/."""
    for candidate in [extracted, *sorted(p for p in extracted.rglob("*") if p.is_dir())]:
        if has_dataset(candidate):
            return candidate
    raise DataError("the downloaded archive has no folder with train/, validation/ and test/ inside")


def fetch_lock(root: Path):
    """The lock beside root that one fetch into root holds at a time (a second one waits)."""
    return root.parent / f".{root.name}.fetch.lock"


def fetch_dataset(url: str, root: Path | str, force: bool, timeout: float) -> bool:
    """Download and unpack the dataset into root; nothing is left half-written if anything fails.

    Returns True if it downloaded, False if root already held the three splits (unless force),
    or if another fetch into root, which this one waited for, put them there. Two fetches at once
    download once: the second waits on an OS file lock beside root, then finds the data there.
    """
    root = Path(root)
    if has_dataset(root) and not force:
        return False
    root.parent.mkdir(parents=True, exist_ok=True)
    waited = []

    def waiting(holder) -> None:
        waited.append(holder)
        say(locks.waiting_line(holder, f"is downloading into {root}"))

    with locks.exclusive(fetch_lock(root), f"the download into {root}", wait=float("inf"), on_wait=waiting):
        if has_dataset(root) and (waited or not force):
            return False
        if root.exists() and any(root.iterdir()) and not force:
            raise DataError(f"{root} exists but is not a complete dataset: move it away or use --force")
        for stale in root.parent.glob(f".fetch-{root.name}-*"):  # left by a fetch that was killed
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=f".fetch-{root.name}-") as tmp:
            _download_and_unpack(url, Path(tmp), timeout)
            found = _dataset_dir(Path(tmp) / "unpacked")
            if root.exists():
                os.replace(root, Path(tmp) / "replaced")  # root is never half there: old, then new
            os.replace(found, root)
    return True


def _download_and_unpack(url: str, tmp: Path, timeout: float) -> None:
    archive = tmp / "dataset.zip"
    _download(url, archive, timeout)
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise DataError(f"the downloaded archive has an unsafe path: {member}")
            zipped.extractall(tmp / "unpacked")
    except zipfile.BadZipFile:
        raise DataError(f"{url} did not return a zip archive") from None
