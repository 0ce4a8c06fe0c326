"""preset=best end to end on whatever device this machine has: the plan tune prints, then each
stage's measured times, then (with --final) train-final's, as a table.

It runs the product's own commands as subprocesses, in a fresh work folder and MLflow store, and
reads the stage times back from the stages' MLflow parent runs (scan, backbone, extraction,
trials, total seconds) and the wall time of each command. On a GPU the same preset runs unchanged.

    python benchmarks/bench_preset.py --minutes 150 --final          # hours on a 2-core CPU
    python benchmarks/bench_preset.py --minutes 20 -- tuner.max_trials=5   # overrides after --
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import real_data_parser

STAGE = "fashion_exp.stage"
KIND = "fashion_exp.kind"


def device() -> str:
    """The accelerator, or the CPU and its vector extensions."""
    if shutil.which("nvidia-smi"):
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        )
        if found.returncode == 0 and found.stdout.strip():
            return "GPU: " + found.stdout.strip().replace("\n", ", ")
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    extensions = [name for name in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f" {name}" in flags]
    return f"CPU ({os.cpu_count()} cores): {', '.join(extensions) or 'no AVX2'}"


def run(command: list[str], folder: Path, env: dict) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[2:4])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.monotonic() - started, done.stdout


def stage_rows(uri: str) -> list[list[str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    rows = []
    for parent in sorted((r for r in runs if r.data.tags.get(STAGE)), key=lambda r: int(r.data.tags[STAGE])):
        metrics, params = parent.data.metrics, parent.data.params
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        best = next((m for m in ("val_accuracy", "val_loss") if m in metrics), None)  # the best trial's score
        rows.append(
            [
                f"stage {parent.data.tags[STAGE]}",
                params.get("data.image_size", "?"),
                str(len(trials)),
                *(f"{metrics.get(f'{k}_seconds', 0):.0f}" for k in ("extraction", "trials", "total")),
                f"{metrics[best]:.4f}" if best else "-",
            ]
        )
    return rows


def shipped(uri: str) -> float:
    """The validation accuracy of the model train-final shipped (the newest final run's)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{KIND}` = 'final'",
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].data.metrics["val_accuracy"]


def main() -> None:
    parser = real_data_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=150, help="tuner.max_minutes")
    parser.add_argument("--final", action="store_true", help="also run train-final and time it")
    parser.add_argument("overrides", nargs="*", help="more key=value overrides (after --)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-preset-"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = {**os.environ, "FASHION_DATA": str(args.data), "FASHION_WEIGHTS": str(args.weights)}
    common = [f"work_dir={folder / 'work'}", f"tracking.uri={uri}", *args.overrides]
    tune = [sys.executable, "-m", "fashion_exp", "tune", "preset=best", f"tuner.max_minutes={args.minutes:g}"]
    wall, out = run([*tune, *common], folder, env)
    print(f"Device: {device()}\n")
    print("\n".join(line for line in out.splitlines() if line.startswith(("Plan", "  stage", "  then", "  ("))))
    print("\n".join(line for line in out.splitlines() if line.startswith(("Ladder:", "Time spent", "Skipped"))))
    rows = stage_rows(uri)
    if args.final:
        seconds, _ = run([sys.executable, "-m", "fashion_exp", "train-final", *common], folder, env)
        rows.append(["train-final", "final.image_size", "-", "-", "-", f"{seconds:.0f}", f"{shipped(uri):.4f}"])
    print(f"\ntune wall time: {wall / 60:.1f} min for a budget of {args.minutes:g} min (+ start-up)\n")
    header = ["what", "size", "trials", "extraction s", "trials s", "total s", "best score"]
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n(store and features in {folder})")


if __name__ == "__main__":
    main()
