"""How noisy is the search's selection signal, and what does cross-validation do about it?

On the real cached features (fp32 ONNX: TensorFlow's within 0.15 points), for a grid of head
configurations around the default search's best region (no augmentation, 10 epochs):

  holdout   today's signal: the best epoch's val_accuracy on the 341 validation photos, once per
            seed (--seeds). `x2` is the mean of two seeds (keras-tuner's executions_per_trial=2).
  cv        k-fold cross-validation over train + validation (fashion_exp/search/folds.py), once
            per repetition (--reps), each with its own fold split and initialisation.

Printed per image size: each configuration's mean score and its spread over seeds / repetitions,
the noise (mean standard deviation, points), how often each signal picks the same top
configuration, the rank correlation between repetitions, and the seconds one score costs.

    python benchmarks/bench_noise.py --sizes 150 299 --work-dir .fashion_exp   # about 40 minutes
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent
GRID = {"learning_rate": [0.001, 0.01], "size_inner": [10, 100, 1000], "droprate": [0.2, 0.5]}


def parse_args() -> argparse.Namespace:
    parser = real_data_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 299])
    parser.add_argument("--seeds", type=int, default=4, help="holdout scores per configuration")
    parser.add_argument("--reps", type=int, default=2, help="cross-validation scores per configuration")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runtime", default="onnx", help="model.runtime of the features")
    parser.add_argument("--work-dir", default=".fashion_exp", help="the product's cache (reused when it has them)")
    parser.add_argument("--out", default=HERE / "results" / "bench_noise.json", help="JSON results file")
    return parser.parse_args()


def configurations() -> list:
    from fashion_exp.hyperparameters import HeadParams

    return [
        HeadParams(learning_rate=lr, size_inner=inner, droprate=drop, augmentation="none")
        for lr, inner, drop in itertools.product(*GRID.values())
    ]


def load(args, size: int):
    from fashion_exp.config import load_config
    from fashion_exp.data.images import Decoder
    from fashion_exp.features.features import Features, choose_runtime, jobs_for, scan

    config = load_config(
        [
            f"data.root={args.data}",
            f"model.weights={args.weights}",
            f"data.image_size={size}",
            f"work_dir={args.work_dir}",
            f"model.runtime={args.runtime}",
        ]
    )
    checked = scan(config.data, config.work_dir)
    decoder = Decoder.for_data(config.data, size)
    runner = choose_runtime(checked, config.model, decoder, config.work_dir, seed=config.seed)
    features = Features.on(checked, runner, decoder, config.work_dir, config.model, config.seed)
    features.get(jobs_for({"none": config.augmentation["none"]}))
    return config, features


def score_holdout(config, features, params, seed: int) -> float:
    from fashion_exp.final.restarts import HeadTraining, train_once

    none = config.augmentation["none"]
    training = HeadTraining.of(features, none, config.tuner.epochs, config.tuner)  # objective: val_accuracy
    return train_once(training, params, seed)[1].val_accuracy


def score_cv(config, features, params, folds: int, seed: int) -> dict:
    from fashion_exp.search.folds import FoldData, FoldPlan, cross_validate, fold_ids

    views = features.views(config.augmentation["none"])
    data = FoldData.join(views, views[0], features.train_labels, features.val, features.val_labels)
    tuner = config.tuner
    plan = FoldPlan(
        fold_ids(data.labels, folds, seed), features.n_classes, tuner.batch_size, tuner.validation_batch_size, seed
    )
    cv = cross_validate(data, params, plan, tuner.epochs)
    return {"score": cv.val_accuracy[cv.best_epoch], "epoch": cv.best_epoch, "folds": cv.fold_best}


def winners(table: list[list[float]]) -> Counter:
    """How often each configuration (index) is the top one, over the columns of table[config][rep]."""
    return Counter(max(range(len(table)), key=lambda c: table[c][r]) for r in range(len(table[0])))


def mean_rank_correlation(table: list[list[float]]) -> float:
    from scipy.stats import spearmanr

    columns = list(zip(*table, strict=True))
    pairs = list(itertools.combinations(columns, 2))
    return statistics.mean(float(spearmanr(a, b).statistic) for a, b in pairs) if pairs else float("nan")


def measure(args, size: int) -> dict:
    config, features = load(args, size)
    config.tuner.epochs = args.epochs
    grid = configurations()
    holdout, cv, epochs = [], [], []
    seconds = {"holdout": 0.0, "cv": 0.0}
    for index, params in enumerate(grid):
        start = time.perf_counter()
        holdout.append([score_holdout(config, features, params, seed) for seed in range(args.seeds)])
        seconds["holdout"] += time.perf_counter() - start
        start = time.perf_counter()
        runs = [score_cv(config, features, params, args.folds, 1000 * (rep + 1)) for rep in range(args.reps)]
        seconds["cv"] += time.perf_counter() - start
        cv.append([r["score"] for r in runs])
        epochs.append([r["epoch"] for r in runs])
        print(
            json.dumps({"size": size, "config": index, **params.as_dict(), "holdout": holdout[-1], "cv": runs}),
            flush=True,
        )
    pairs = [[statistics.mean(row[i : i + 2]) for i in range(0, args.seeds - 1, 2)] for row in holdout]
    return {
        "size": size,
        "grid": [p.as_dict() for p in grid],
        "holdout": holdout,
        "cv": cv,
        "cv_epochs": epochs,
        "signals": {
            "holdout x1": summary(holdout, seconds["holdout"] / (len(grid) * args.seeds)),
            "holdout x2": summary(pairs, 2 * seconds["holdout"] / (len(grid) * args.seeds)),
            f"cv {args.folds}-fold": summary(cv, seconds["cv"] / (len(grid) * args.reps)),
        },
    }


def summary(table: list[list[float]], seconds: float) -> dict:
    spread = [statistics.stdev(row) for row in table] if len(table[0]) > 1 else [float("nan")]
    top = winners(table)
    return {
        "noise_points": 100 * statistics.mean(spread),
        "top": dict(top),
        "same_top": top.most_common(1)[0][1] / len(table[0]),
        "rank_rho": mean_rank_correlation(table),
        "seconds_per_score": seconds,
    }


def main() -> None:
    args = parse_args()
    results = [measure(args, size) for size in args.sizes]
    print()
    for result in results:
        print(f"{result['size']}px, {len(result['grid'])} configurations (grid {GRID}, no augmentation)")
        print(f"  {'config':<28} {'holdout mean':>12} {'sd':>5} {'cv mean':>8} {'sd':>5} {'cv epoch':>8}")
        for params, h, c, e in zip(result["grid"], result["holdout"], result["cv"], result["cv_epochs"], strict=True):
            name = f"lr {params['learning_rate']} in {params['size_inner']} dr {params['droprate']}"
            sd_h = 100 * statistics.stdev(h) if len(h) > 1 else float("nan")
            sd_c = 100 * statistics.stdev(c) if len(c) > 1 else float("nan")
            print(
                f"  {name:<28} {statistics.mean(h):>12.4f} {sd_h:>5.2f} "
                f"{statistics.mean(c):>8.4f} {sd_c:>5.2f} {statistics.mean(e):>8.1f}"
            )
        print(f"  {'signal':<14} {'noise pts':>9} {'same top':>8} {'rank rho':>8} {'s/score':>8}  top picks")
        for name, s in result["signals"].items():
            print(
                f"  {name:<14} {s['noise_points']:>9.2f} {s['same_top']:>8.2f} {s['rank_rho']:>8.3f} "
                f"{s['seconds_per_score']:>8.1f}  {s['top']}"
            )
        print()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
