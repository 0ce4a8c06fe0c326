"""Benchmark the tune path on the real dataset and print a table.

Measures, in one process run on this machine:
  1. Xception feature throughput (decode + forward pass) at 150 and 299 pixels, images/s;
  2. one 10-epoch head trial on cached 150px features (the full training split);
  3. the same trial done the naive way: the frozen base run on images in every epoch
     (Xception + head fitted on a subset for one epoch and evaluated on a validation subset,
     then scaled to the full splits and 10 epochs);
  4. the wall time of a cold default `tune` (empty feature cache) and of a warm one (fresh=true,
     cache filled), both as subprocesses of `python -m fashion_exp tune`.

Targets (from the issue): cached trial >= 50x faster than naive; in a cold tune, time outside
feature extraction <= 25% of the total; warm tune >= 10x faster than cold.

    python benchmarks/bench_tune.py                  # everything (about 20 minutes on 2 cores)
    python benchmarks/bench_tune.py --skip-tune      # throughput and trial timings only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def parse_args() -> argparse.Namespace:
    parser = real_data_parser(__doc__)
    parser.add_argument("--throughput-images", type=int, default=96, help="images per throughput measurement")
    parser.add_argument("--naive-images", type=int, default=96, help="training images in the naive epoch")
    parser.add_argument("--skip-tune", action="store_true", help="skip the cold and warm tune runs")
    parser.add_argument("--work-dir", default=None, help="where the tune runs write (default: a temp folder)")
    parser.add_argument("--out", default=HERE / "results" / "bench_tune.json", help="JSON results file")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for the tune runs")
    return parser.parse_args()


def throughput(config, dataset, size: int, n: int) -> float:
    """Images/s of decode + frozen Xception forward pass at size x size (first batch not counted)."""
    import numpy as np

    from fashion_exp.data.images import Decoder
    from fashion_exp.features.backbone import build_backbone

    backbone = build_backbone(config.model, size, config.seed)
    decoder = Decoder.for_data(config.data, size)
    paths = dataset.paths("train")[: n + 32]
    batch = lambda ps: np.stack([decoder.load(p) for p in ps])  # noqa: E731
    backbone.model.predict_on_batch(batch(paths[:32]))  # warm-up: graph tracing
    start = time.perf_counter()
    for i in range(32, 32 + n, 32):
        backbone.model.predict_on_batch(batch(paths[i : i + 32]))
    return n / (time.perf_counter() - start)


PARAMS = dict(learning_rate=0.001, size_inner=100, droprate=0.2, augmentation="none")  # the course's pick


def cached_trial(config, features, labels, val, val_labels, epochs: int = 10) -> float:
    """Seconds for one trial on cached features: build the head and fit it for `epochs`, as tune does."""
    import tensorflow as tf

    from fashion_exp.head.fit import fit_on_views
    from fashion_exp.head.model import HeadInputs, new_head
    from fashion_exp.hyperparameters import HeadParams

    batch = config.tuner.batch_size
    start = time.perf_counter()
    head = new_head(HeadInputs(features.shape[1:], 10, batch), HeadParams(**PARAMS), config.seed, len(labels))
    views = tf.constant(features[None])
    fit_on_views(head, views, labels, (val, val_labels), batch, config.tuner.validation_batch_size, 0, epochs)
    return time.perf_counter() - start


def naive_trial(config, dataset, size: int, n_train: int, epochs: int = 10) -> tuple[float, float]:
    """Seconds for the naive trial: the whole model (frozen Xception + head) fitted on images.

    Fits one epoch on n_train training images and evaluates on n_train // 3 validation images,
    then scales both to the full splits and `epochs` epochs. Returns (measured, scaled) seconds.
    """
    import keras
    import numpy as np

    from fashion_exp.data.images import Decoder
    from fashion_exp.features.backbone import build_backbone
    from fashion_exp.head.model import build_head
    from fashion_exp.hyperparameters import HeadParams

    backbone = build_backbone(config.model, size, config.seed)
    load_image = Decoder.for_data(config.data, size).load
    head = build_head(backbone.dim, 10, HeadParams(**PARAMS), config.seed, steps_per_epoch=1)
    model = keras.Model(backbone.model.input, head(backbone.model.output))
    model.compile(
        optimizer=keras.optimizers.Adam(0.001),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    n_val = max(n_train // 3, 32)
    x = np.stack([load_image(p) for p in dataset.paths("train")[:n_train]])
    y = dataset.labels("train")[:n_train]
    xv = np.stack([load_image(p) for p in dataset.paths("validation")[:n_val]])
    yv = dataset.labels("validation")[:n_val]
    model.fit(x[:32], y[:32], epochs=1, verbose=0)  # warm-up: graph tracing
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, validation_data=(xv, yv), verbose=0)
    fit_seconds = time.perf_counter() - start
    # decoding is part of the naive loop too (an ImageDataGenerator reads files every epoch)
    start = time.perf_counter()
    for p in dataset.paths("train")[:n_train] + dataset.paths("validation")[:n_val]:
        load_image(p)
    decode_seconds = time.perf_counter() - start
    measured = fit_seconds + decode_seconds
    per_image = measured / (n_train + n_val)  # train and validation images cost about the same
    full = len(dataset.splits["train"]) + len(dataset.splits["validation"])
    return measured, per_image * full * epochs


def run_tune(work: Path, overrides: list[str], env: dict, fresh: bool) -> tuple[float, str]:
    command = [
        sys.executable,
        "-m",
        "fashion_exp",
        "tune",
        f"work_dir={work / 'cache'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        *overrides,
    ]
    if fresh:
        command.append("fresh=true")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    (work / f"tune-{'warm' if fresh else 'cold'}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"tune failed ({done.returncode}); see {work}/tune-*.log\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def timing(stdout: str, name: str) -> float:
    match = re.search(rf"{name} ([0-9.]+) s", stdout)
    return float(match.group(1)) if match else float("nan")


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from fashion_exp.config import load_config
    from fashion_exp.data.dataset import scan_configured

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-tune-"))
    work.mkdir(parents=True, exist_ok=True)
    config = load_config([f"data.root={args.data}", f"model.weights={args.weights}", f"work_dir={work / 'cache'}"])
    dataset = scan_configured(config.data, ["train", "validation"], config.work_dir)
    rows: list[tuple[str, str]] = []
    results: dict[str, float] = {}

    for size in (150, 299):
        results[f"throughput_{size}"] = throughput(config, dataset, size, args.throughput_images)
        rows.append((f"Xception features at {size}px (decode + forward)", f"{results[f'throughput_{size}']:.1f} img/s"))
        print(rows[-1], flush=True)

    env = {**os.environ, "FASHION_DATA": str(args.data), "FASHION_WEIGHTS": str(args.weights)}
    if not args.skip_tune:
        cold, out = run_tune(work, args.overrides, env, fresh=False)
        results.update(tune_cold=cold, cold_extraction=timing(out, "extraction"), cold_trials=timing(out, "trials"))
        best = re.search(r"Best trial (\S+): val_accuracy ([0-9.]+)", out)
        results["best_val_accuracy"] = float(best.group(2)) if best else float("nan")
        print(out[out.find("Timings") :], flush=True)
        warm, out = run_tune(work, args.overrides, env, fresh=True)
        results.update(tune_warm=warm, warm_extraction=timing(out, "extraction"))
        print(out[out.find("Timings") :], flush=True)

    # the cached trial uses the 150px features (from the cold tune's cache when it ran)
    from fashion_exp.data.images import Decoder
    from fashion_exp.features.features import Features, jobs_for, scan

    quiet = lambda *_: None  # noqa: E731
    checked = scan(config.data, config.work_dir, quiet)
    decoder = Decoder.for_data(config.data, 150)
    features = Features.open(checked, config.model, decoder, config.work_dir, seed=config.seed, echo=quiet)
    none = config.augmentation["none"]
    features.get(jobs_for({"none": none}))
    train = features.views(none)[0]
    trial = [cached_trial(config, train, features.train_labels, features.val, features.val_labels) for _ in range(3)]
    del features
    results["cached_trial"] = float(np.median(trial))
    measured, scaled = naive_trial(config, dataset, 150, args.naive_images)
    results.update(naive_trial_measured=measured, naive_trial_scaled=scaled)

    speedup = results["naive_trial_scaled"] / results["cached_trial"]
    rows += [
        ("10-epoch trial on cached 150px features (median of 3)", f"{results['cached_trial']:.2f} s"),
        (
            f"10-epoch naive trial, scaled from {args.naive_images} train images ({measured:.1f} s measured)",
            f"{scaled:.0f} s",
        ),
        ("cached trial speed-up over naive (target >= 50x)", f"{speedup:.0f}x"),
    ]
    if not args.skip_tune:
        outside = 1 - results["cold_extraction"] / results["tune_cold"]
        rows += [
            ("cold default tune, wall time", f"{results['tune_cold']:.0f} s"),
            ("  of which feature extraction", f"{results['cold_extraction']:.0f} s"),
            ("  time outside extraction (target <= 25%)", f"{outside:.0%}"),
            ("warm default tune (fresh=true, cache filled), wall time", f"{results['tune_warm']:.0f} s"),
            ("warm speed-up over cold (target >= 10x)", f"{results['tune_cold'] / results['tune_warm']:.1f}x"),
            ("best val_accuracy of the cold tune", f"{results['best_val_accuracy']:.4f}"),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  value")
    print("-" * (width + 14))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out_path}   tune logs and MLflow store: {work}")


if __name__ == "__main__":
    main()
