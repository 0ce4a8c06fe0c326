"""What it costs to key caches on file contents instead of file names, sizes and mtimes.

Builds a dataset of N files (default 34,000: the real clothing-dataset-small photos copied over and
over into train/ and validation/ class folders) and times, on the same files in one run:
  1. stat of every file (what a size + mtime key reads);
  2. read + sha256 of every file (what the content key reads), twice: right after writing, and again;
  3. the dataset check `scan_dataset` cold (every image decoded once) and warm (verdicts cached by
     content hash, so only reading and hashing remain): what a `tune` pays before any feature work.

    python benchmarks/bench_fingerprint.py                 # 34,000 files in a temp folder
    python benchmarks/bench_fingerprint.py --files 5000
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("FASHION_DATA", SHARED / "data/clothing-dataset-small"))
    parser.add_argument("--files", type=int, default=34_000, help="files in the generated dataset")
    parser.add_argument("--keep", action="store_true", help="keep the generated dataset")
    return parser.parse_args()


def build(source: Path, target: Path, n: int) -> list[Path]:
    """Copy the source photos round-robin into target/{train,validation}/<class>/ until n files exist.

    Each copy ends in a few bytes of its own (JPEG readers ignore them), so every file is distinct
    content, as in a real dataset of n photos."""
    photos = sorted(p for p in source.rglob("*.jpg"))
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        split = "validation" if i % 10 == 0 else "train"
        path = target / split / photo.parent.name / f"{i:06d}-{photo.name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(photo.read_bytes() + f"copy {i}".encode())
        out.append(path)
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    from fashion_exp.config import load_config
    from fashion_exp.data.dataset import scan_configured

    work = Path(tempfile.mkdtemp(prefix="bench-fingerprint-"))
    try:
        files = build(Path(args.data), work / "data", args.files)
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        config = load_config([f"data.root={work / 'data'}", f"work_dir={work / 'cache'}"])
        rows = [
            ("files (MiB)", f"{len(files)} ({size_mb:.0f} MiB)"),
            ("stat every file (size + mtime key)", f"{timed(lambda: [p.stat() for p in files]):.2f} s"),
        ]
        for label in ("first", "second"):
            seconds = timed(lambda: [hashlib.sha256(p.read_bytes()).digest() for p in files])
            rows.append((f"read + sha256 every file ({label} pass)", f"{seconds:.2f} s"))
        splits = ["train", "validation"]
        rows.append(
            (
                "dataset check, cold (decode every image)",
                f"{timed(lambda: scan_configured(config.data, splits, config.work_dir)):.1f} s",
            )
        )
        rows.append(
            (
                "dataset check, warm (read + hash only)",
                f"{timed(lambda: scan_configured(config.data, splits, config.work_dir)):.2f} s",
            )
        )
        width = max(len(r[0]) for r in rows)
        print(f"\n{'measure':<{width}}  value")
        print("-" * (width + 16))
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
    finally:
        if args.keep:
            print(f"dataset kept at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
