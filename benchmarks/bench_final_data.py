"""Should train-final train on train alone or on train + validation? Measured without the test split.

Nested cross-validation on the real cached features (fp32 ONNX, no augmentation) with one head
configuration (default: the searches' pick, lr 0.001, inner 100, dropout 0.2): train + validation
is split into --outer stratified folds; each outer fold in turn plays the test split and the rest
(R) is everything a final model may learn from. Two ways to train on R, both scored on the
held-out outer fold:

  train-only  today's train-final: fit on R's training photos, keep the best epoch by R's
              validation photos (ModelCheckpoint), --epochs epochs.
  train+val   fit on all of R for E epochs, E chosen by --inner-fold cross-validation on R
              (the pooled held-out accuracy's best epoch, fashion_exp/search/folds.py).

Printed: each way's mean held-out accuracy over outer folds and seeds, the paired difference with
its standard error, the epochs chosen, and the seconds each way costs.

    python benchmarks/bench_final_data.py --size 299 --work-dir .fashion_exp    # about 15 minutes
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent


def parse_args():
    parser = real_data_parser(__doc__)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--work-dir", default=".fashion_exp")
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--outer", type=int, default=5)
    parser.add_argument("--inner", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--size-inner", type=int, default=100)
    parser.add_argument("--droprate", type=float, default=0.2)
    parser.add_argument("--out", default=HERE / "results" / "bench_final_data.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import numpy as np
    import tensorflow as tf
    from bench_noise import load

    from fashion_exp.final.restarts import HeadTraining, train_once
    from fashion_exp.head.fit import fit_on_views
    from fashion_exp.head.model import HeadInputs, new_head
    from fashion_exp.hyperparameters import HeadParams
    from fashion_exp.search.folds import FoldData, cross_validate, fold_ids

    args.sizes = [args.size]
    config, features = load(args, args.size)
    params = HeadParams(args.learning_rate, args.size_inner, args.droprate, "none")
    clean = np.concatenate([features.views(config.augmentation["none"])[0], features.val])
    labels = np.concatenate([features.train_labels, features.val_labels])
    is_val = np.arange(len(labels)) >= len(features.train_labels)
    batch, vbatch, n_classes = config.tuner.batch_size, config.tuner.validation_batch_size, features.n_classes
    rows = []
    for seed in range(args.seeds):
        outer = fold_ids(labels, args.outer, 100 + seed)
        for fold in range(args.outer):
            test, rest = outer == fold, outer != fold
            held = (clean[test], labels[test])

            def accuracy(head, held=held) -> float:
                return float(np.mean(head.predict(held[0], verbose=0).argmax(1) == held[1]))

            start = time.perf_counter()  # train-only: best epoch by R's validation photos
            fit_rows, pick_rows = rest & ~is_val, rest & is_val
            training = HeadTraining(
                tf.constant(clean[fit_rows][None]),
                labels[fit_rows],
                (clean[pick_rows], labels[pick_rows]),
                n_classes,
                args.epochs,
                batch,
                vbatch,
                "val_accuracy",
            )
            head, restart = train_once(training, params, seed)
            a = {"accuracy": accuracy(head), "epochs": restart.best_epoch + 1, "seconds": time.perf_counter() - start}

            start = time.perf_counter()  # train+val: epochs by inner cross-validation, then all of R
            data = FoldData(clean[rest][None], clean[rest], labels[rest])
            cv = cross_validate(data, params, n_classes, args.inner, seed, args.epochs, batch, vbatch)
            epochs = cv.best_epoch + 1
            head = new_head(HeadInputs(clean.shape[1:], n_classes, batch), params, seed, int(rest.sum()))
            fit_on_views(head, tf.constant(clean[rest][None]), labels[rest], held, batch, vbatch, seed, epochs)
            b = {"accuracy": accuracy(head), "epochs": epochs, "seconds": time.perf_counter() - start}
            row = {"seed": seed, "fold": fold, "train_only": a, "train_val": b}
            rows.append(row)
            print(json.dumps(row), flush=True)
    diffs = [r["train_val"]["accuracy"] - r["train_only"]["accuracy"] for r in rows]
    print(f"\n{args.size}px, {params.as_dict()}, {args.outer} outer folds x {args.seeds} seeds")
    print(f"  {'way':<11} {'held-out acc':>12} {'epochs':>7} {'seconds':>8}")
    for way in ("train_only", "train_val"):
        acc = statistics.mean(r[way]["accuracy"] for r in rows)
        epochs = statistics.mean(r[way]["epochs"] for r in rows)
        seconds = statistics.mean(r[way]["seconds"] for r in rows)
        print(f"  {way:<11} {acc:>12.4f} {epochs:>7.1f} {seconds:>8.1f}")
    se = statistics.stdev(diffs) / len(diffs) ** 0.5
    print(f"  train+val - train-only: {100 * statistics.mean(diffs):+.2f} points (standard error {100 * se:.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
