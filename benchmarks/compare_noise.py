"""Compare two runtimes' features on the cross-validated signal: two bench_noise.py results (same
grid, sizes and fold seeds, different --runtime) side by side, per configuration and in summary.

The validation split alone cannot say whether int8 features lose half a point: one head fit on 341
photos moves by about 1.9 points with the seed. Cross-validation over all 3,409 photos (0.5 points)
can, and the fold splits and initialisations are the same for both runtimes, so the differences are
paired.

    python benchmarks/bench_noise.py --sizes 150 --seeds 2 --reps 1 --runtime onnx-int8 --out int8.json
    python benchmarks/bench_noise.py --sizes 150 --seeds 2 --reps 1 --runtime tensorflow --out tf.json
    python benchmarks/compare_noise.py tf.json int8.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="bench_noise.py JSON of the reference runtime (TensorFlow)")
    parser.add_argument("candidate", type=Path, help="bench_noise.py JSON of the runtime compared with it")
    return parser.parse_args()


def name(params: dict) -> str:
    return f"lr {params['learning_rate']} in {params['size_inner']} dr {params['droprate']}"


def compare(reference: dict, candidate: dict) -> None:
    from scipy.stats import spearmanr

    if reference["grid"] != candidate["grid"]:
        raise SystemExit("error: the two results hold different grids; run bench_noise.py with the same version")
    ref_cv = [statistics.mean(row) for row in reference["cv"]]
    can_cv = [statistics.mean(row) for row in candidate["cv"]]
    ref_h = [statistics.mean(row) for row in reference["holdout"]]
    can_h = [statistics.mean(row) for row in candidate["holdout"]]
    print(f"{reference['size']}px: cross-validated and validation-split scores, reference vs candidate")
    print(f"  {'config':<28} {'cv ref':>7} {'cv cand':>7} {'diff':>6} {'val ref':>7} {'val cand':>8} {'diff':>6}")
    for params, a, b, c, d in zip(reference["grid"], ref_cv, can_cv, ref_h, can_h, strict=True):
        cv_diff, val_diff = 100 * (b - a), 100 * (d - c)
        print(f"  {name(params):<28} {a:>7.4f} {b:>7.4f} {cv_diff:>+6.2f} {c:>7.4f} {d:>8.4f} {val_diff:>+6.2f}")
    for signal, ref, can in (("cv", ref_cv, can_cv), ("validation", ref_h, can_h)):
        diffs = [100 * (b - a) for a, b in zip(ref, can, strict=True)]
        best_ref, best_can = max(range(len(ref)), key=ref.__getitem__), max(range(len(can)), key=can.__getitem__)
        print(
            f"  {signal}: mean diff {statistics.mean(diffs):+.2f} points (standard error "
            f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.2f}), best {100 * (max(can) - max(ref)):+.2f} points, "
            f"same top configuration: {best_ref == best_can} ({name(reference['grid'][best_ref])} vs "
            f"{name(candidate['grid'][best_can])}), rank correlation {float(spearmanr(ref, can).statistic):.3f}"
        )
    print()


def read(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: {path}: not a bench_noise.py result ({err})") from None


def main() -> None:
    args = parse_args()
    references = {r["size"]: r for r in read(args.reference)}
    for candidate in read(args.candidate):
        if candidate["size"] in references:
            compare(references[candidate["size"]], candidate)


if __name__ == "__main__":
    main()
