"""What a search spends around its trials on cached features, with and without gc.freeze.

Runs the same warm search (fresh=true, features already in --work-dir, its own MLflow store) as
subprocesses of `python -m fashion_exp tune`, alternating two variants --rounds times:

  product     the search as shipped: TrialHooks.on_search_begin freezes the objects that live as
              long as the process, so the ~6 gc.collect a trial runs skip them
  no-freeze   the same with gc.freeze made a no-op in that process (the code before the change)

and prints each variant's trials seconds (the search's own `Timings: trials`), seconds a trial,
and the ratio. Every variant runs the same trials (same seed, same space), so the difference is
the overhead between the fits.

    python benchmarks/bench_trials.py --work-dir W --trials 10 --rounds 2   # W: a 150px cache
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent
NO_FREEZE = "import gc, runpy, sys; gc.freeze = lambda: None; sys.argv[0] = 'fashion_exp'; "
NO_FREEZE += "runpy.run_module('fashion_exp', run_name='__main__')"


def parse_args():
    parser = real_data_parser(__doc__)
    parser.add_argument("--work-dir", required=True, help="a work_dir whose features the search finds cached")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternating")
    parser.add_argument("--out", default=HERE / "results" / "bench_trials.json", help="JSON results file")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for the searches")
    return parser.parse_args()


def run(variant: str, args, folder: Path) -> dict:
    start = [sys.executable, "-m", "fashion_exp"] if variant == "product" else [sys.executable, "-c", NO_FREEZE]
    overrides = [f"data.root={args.data}", f"model.weights={args.weights}", f"work_dir={Path(args.work_dir).resolve()}"]
    overrides += ["fresh=true", f"tuner.max_trials={args.trials}", *args.overrides]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([*start, "tune", *overrides], cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{variant}: tune failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    seconds = float(re.search(r"trials ([0-9.]+) s", done.stdout).group(1))
    best = float(re.search(r"val_accuracy ([0-9.]+)", done.stdout).group(1))
    return {"variant": variant, "trials_s": seconds, "per_trial_s": seconds / args.trials, "best_val": best}


def main() -> None:
    args = parse_args()
    rows = []
    for round_ in range(args.rounds):
        for variant in ("no-freeze", "product"):
            with tempfile.TemporaryDirectory() as folder:
                rows.append({"round": round_, **run(variant, args, Path(folder))})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"Warm search, {args.trials} trials on cached features, {args.rounds} round(s) of each variant")
    print(f"{'variant':>10} {'round':>5} {'trials s':>9} {'s/trial':>8} {'best val':>9}")
    for r in rows:
        row = f"{r['variant']:>10} {r['round']:>5} {r['trials_s']:>9.1f}"
        print(f"{row} {r['per_trial_s']:>8.2f} {r['best_val']:>9.4f}")
    mean = {v: sum(r["trials_s"] for r in rows if r["variant"] == v) / args.rounds for v in ("no-freeze", "product")}
    print(f"no-freeze / product: {mean['no-freeze'] / mean['product']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
