"""Benchmark one search on 0, 1 and 2 local workers, with a cold and a warm feature cache.

Each row is one `python -m fashion_exp tune` subprocess on the real dataset at 150 px:
  cold: an empty work_dir (features extracted first: by this process with 0 workers, split
        between the workers otherwise);
  warm: the same work_dir afterwards with fresh=true (every feature cached; a new search).
The table gives wall time, finished trials and trials per minute (finished trials / wall time).

    python benchmarks/bench_distributed.py                           # default: 10 trials, 1 view
    python benchmarks/bench_distributed.py --workers 0 2 tuner.max_trials=20

1 view per augmented policy (augmentation.shear_zoom_flip.views=1: 6,477 images) keeps a cold run near four
minutes on a 2-core CPU; pass augmentation.shear_zoom_flip.views=10 for the default's extraction.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = real_data_parser(__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts to compare")
    parser.add_argument("--caches", nargs="+", default=["cold", "warm"], choices=["cold", "warm"])
    parser.add_argument("--work-dir", default=None, help="where the runs write (default: a temp folder)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    return parser.parse_args()


def finished_trials(db: Path) -> int:
    """FINISHED trial runs of the newest search in the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("bench")
    parent = client.search_runs([experiment.experiment_id], "tags.`fashion_exp.kind` = 'search'", max_results=1)[0]
    kids = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return sum(k.info.status == "FINISHED" for k in kids)


def run(workers: int, cache: str, base: Path, args) -> tuple[float, int, int]:
    work = base / f"work-{workers}"
    db = base / f"mlflow-{workers}-{cache}.db"
    if cache == "cold":
        shutil.rmtree(work, ignore_errors=True)
    overrides = [
        f"data.root={args.data}",
        f"model.weights={args.weights}",
        "data.image_size=150",
        "tuner.max_trials=10",
        "augmentation.shear_zoom_flip.views=1",
        f"work_dir={work}",
        f"tracking.uri=sqlite:///{db}",
        "tracking.experiment=bench",
        f"tuner.workers={workers}",
        "fresh=true",
        *args.overrides,
    ]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fashion_exp", "tune", *overrides],
        cwd=base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
    return wall, finished_trials(db), done.returncode


def main() -> None:
    args = parse_args()
    base = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_distributed_"))
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"runs in {base}; cpus {len(os.sched_getaffinity(0))}", flush=True)
    for workers in args.workers:
        for cache in args.caches:
            wall, trials, code = run(workers, cache, base, args)
            rows.append((cache, workers, wall, trials, code))
            print(f"  {cache} workers={workers}: {wall:.0f} s, {trials} trials, exit {code}", flush=True)
    print("\n| cache | workers | wall s | trials | trials/min | wall vs 0 workers |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base_wall = {cache: wall for cache, workers, wall, _, _ in rows if workers == 0}
    for cache, workers, wall, trials, code in rows:
        ratio = f"{wall / base_wall[cache]:.2f}x" if cache in base_wall else "-"
        note = "" if code == 0 else f" (exit {code})"
        print(f"| {cache} | {workers} | {wall:.0f}{note} | {trials} | {trials / wall * 60:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
