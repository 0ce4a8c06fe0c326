"""Benchmark the extraction runtimes (model.runtime) on the real dataset and print a table.

For each image size and each runtime (tensorflow, onnx fp32, onnx-int8), in one process:
  1. setup: the ONNX export or the int8 quantization (made once, then kept in work_dir);
  2. extraction: decode + backbone over every train and validation photo through the product's
     extraction path (Extractor.run, background decoding), images/s;
  3. accuracy: the mean cosine of each photo's features to TensorFlow's, and head trials (the
     product's head, 10 epochs, the same seeds) for a grid of the default search's learning rates
     and inner sizes (droprate 0.2, no augmentation) on each runtime's features: the best
     val_accuracy, its gap to TensorFlow's, and the Spearman rank correlation of the trial scores
     against TensorFlow's.

Targets (from the issue): best val_accuracy within 0.5 points of TensorFlow fp32, rankings
preserved; faster extraction.

    python benchmarks/bench_runtime.py                   # 150 and 299 px (about 40 minutes on 2 cores)
    python benchmarks/bench_runtime.py --sizes 150       # about 10 minutes
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent
RUNTIMES = ("tensorflow", "onnx", "onnx-int8")
GRID = {"learning_rate": [0.0001, 0.001, 0.01, 0.1], "size_inner": [10, 100, 1000]}


def parse_args() -> argparse.Namespace:
    parser = real_data_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 299])
    parser.add_argument("--seeds", type=int, default=1, help="head trials per configuration (scores averaged)")
    parser.add_argument("--out", default=HERE / "results" / "bench_runtime.json", help="JSON results file")
    parser.add_argument(
        "--work-dir", help="keep the ONNX files and features here (the product's layout: a later run reuses them)"
    )
    return parser.parse_args()


def extract(config, features, runtime: str, work_dir: Path) -> dict:
    """Setup and extraction timings and the features of one runtime."""
    import numpy as np

    from fashion_exp.data.augment import IDENTITY
    from fashion_exp.features.cache import FeatureCache
    from fashion_exp.features.extract import Extractor, jobs_for_policy
    from fashion_exp.features.onnx_files import calibration
    from fashion_exp.features.runtime import open_runner

    runner = open_runner(
        features.backbone,
        runtime,
        config.model.batch_size,
        work_dir,
        calibration(features.dataset, features.decoder, config.model),
    )
    size = features.decoder.size
    start = time.perf_counter()
    runner.features(np.zeros((1, size, size, 3), np.uint8))  # export / quantize / trace
    setup = time.perf_counter() - start
    jobs = [jobs_for_policy("train", IDENTITY)[0], jobs_for_policy("validation", IDENTITY)[0]]
    cache = FeatureCache(work_dir / "features")  # the runtime is part of every cache key
    extractor = Extractor(runner, features.dataset, features.decoder, cache, config.model.batch_size, 0)
    start = time.perf_counter()
    got = extractor.run(jobs)
    seconds = time.perf_counter() - start
    n = sum(len(f) for f in got.values())
    return {"setup_s": setup, "img_per_s": n / seconds, "train": got[jobs[0]], "val": got[jobs[1]]}


def trial_scores(config, features, train, val, seeds: int) -> list[float]:
    """Best val_accuracy of a 10-epoch head for each GRID configuration, averaged over seeds."""
    import numpy as np
    import tensorflow as tf

    from fashion_exp.final.restarts import HeadTraining, train_once
    from fashion_exp.hyperparameters import HeadParams

    training = HeadTraining(
        views=tf.constant(train[None]),
        labels=features.train_labels,
        val=(val, features.val_labels),
        n_classes=features.n_classes,
        epochs=10,
        batch_size=config.tuner.batch_size,
        validation_batch_size=config.tuner.validation_batch_size,
        objective="val_accuracy",
    )
    scores = []
    for lr, inner in itertools.product(GRID["learning_rate"], GRID["size_inner"]):
        params = HeadParams(learning_rate=lr, size_inner=inner, droprate=0.2, augmentation="none")
        scores.append(float(np.mean([train_once(training, params, seed)[1].val_accuracy for seed in range(seeds)])))
    return scores


def main() -> None:
    args = parse_args()
    from scipy.stats import spearmanr

    from fashion_exp.config import load_config
    from fashion_exp.data.images import Decoder
    from fashion_exp.features.features import Features, scan
    from fashion_exp.features.onnx_files import mean_cosine

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.work_dir or scratch
        for size in args.sizes:
            config = load_config(
                [
                    f"data.root={args.data}",
                    f"model.weights={args.weights}",
                    f"data.image_size={size}",
                    f"work_dir={tmp}",
                ]
            )
            quiet = lambda *_: None  # noqa: E731
            checked = scan(config.data, config.work_dir, quiet)
            decoder = Decoder.for_data(config.data, size)
            features = Features.open(checked, config.model, decoder, config.work_dir, seed=config.seed, echo=quiet)
            reference = None
            for runtime in RUNTIMES:
                got = extract(config, features, runtime, Path(tmp))
                scores = trial_scores(config, features, got["train"], got["val"], args.seeds)
                if reference is None:
                    reference = {**got, "scores": scores}
                row = {
                    "size": size,
                    "runtime": runtime,
                    "setup_s": got["setup_s"],
                    "img_per_s": got["img_per_s"],
                    "speedup": got["img_per_s"] / reference["img_per_s"],
                    "cosine": mean_cosine(got["val"], reference["val"]),
                    "best_val": max(scores),
                    "gap_points": 100 * (max(scores) - max(reference["scores"])),
                    "spearman": float(spearmanr(scores, reference["scores"]).statistic),
                    "scores": scores,
                }
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "scores"}), flush=True)
    print()
    print(
        f"{'size':>4}  {'runtime':<10} {'setup s':>7} {'img/s':>6} {'x TF':>5} {'cosine':>6} "
        f"{'best val':>8} {'gap pts':>7} {'rank rho':>8}"
    )
    for r in rows:
        print(
            f"{r['size']:>4}  {r['runtime']:<10} {r['setup_s']:>7.1f} {r['img_per_s']:>6.1f} {r['speedup']:>5.2f} "
            f"{r['cosine']:>6.4f} {r['best_val']:>8.4f} {r['gap_points']:>+7.2f} {r['spearman']:>8.3f}"
        )
    print(f"\nhead grid: learning_rate x size_inner = {GRID}, droprate 0.2, no augmentation, {args.seeds} seed(s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
