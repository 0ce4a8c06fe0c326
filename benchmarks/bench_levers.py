"""The levers that might make one fine-tuned head less dependent on the epoch it keeps, measured on
the real data with the product's own training (final/restarts.train_once on cached activations):

  base      block14 fine-tuned under the head stage 1 finds (lr 0.001, inner 1000, dropout 0,
            block_lr 0.1), no augmentation: preset=best's best stage-2 configuration
  ema       the same with an exponential moving average of the weights (hyperparameter ema)
  smooth    the same with label smoothing (hyperparameter label_smoothing)
  blocks=2  block13 as well
  bf16      base with the blocks under Keras' mixed_bfloat16 (model.train_precision=bfloat16; on a CPU
            without BF16 units TensorFlow emulates it: the numbers are bf16's, the speed is not)

Each from --seeds, every epoch run (no patience), validated on the 341 validation photos (the test
split is never read). The table gives each run's curve, its best epoch and score, its last epoch,
and the spread of its last epochs (max - min of epochs 4..): what a lever that makes the kept
epoch matter less would shrink.

    python benchmarks/bench_levers.py --size 150 --seeds 42 43      # about 40 min on a 2-core CPU
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent
BASE = {"learning_rate": 0.001, "size_inner": 1000, "droprate": 0.0, "augmentation": "none", "block_lr": 0.1}
LEVERS = {
    "base": {"blocks": 1},
    "ema": {"blocks": 1, "ema": 0.99},
    "smooth": {"blocks": 1, "label_smoothing": 0.1},
    "blocks=2": {"blocks": 2},
    "bf16": {"blocks": 1},
}
PRECISION = {"bf16": "mixed_bfloat16"}  # levers that change the blocks' dtype policy, not a hyperparameter


def parse_args():
    parser = real_data_parser(__doc__)
    parser.add_argument("--size", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    parser.add_argument("--work-dir", default=".fashion_exp", help="its feature cache (extracted once per cut)")
    parser.add_argument("--out", default=HERE / "results" / "bench_levers.json")
    return parser.parse_args()


def open_features(args, blocks: int):
    from fashion_exp.config import load_config
    from fashion_exp.data.images import Decoder
    from fashion_exp.features.features import Features, choose_runtime, jobs_for, scan

    config = load_config([f"data.root={args.data}", f"model.weights={args.weights}", f"work_dir={args.work_dir}"])
    checked = scan(config.data, config.work_dir)
    decoder = Decoder.for_data(config.data, args.size)
    runner = choose_runtime(checked, config.model, decoder, config.work_dir, seed=config.seed, blocks=blocks)
    features = Features.on(checked, runner, decoder, config.work_dir, config.model, config.seed)
    features.get(jobs_for({"none": config.augmentation["none"]}))
    return config, features


def main() -> None:
    args = parse_args()
    from fashion_exp.final.restarts import HeadTraining, train_once
    from fashion_exp.hyperparameters import HeadParams

    rows, opened = [], {}
    for name in args.levers:
        params = HeadParams.from_values({**BASE, **LEVERS[name]})
        if params.blocks not in opened:
            opened = {params.blocks: open_features(args, params.blocks)}  # (one cut in memory at a time)
        config, features = opened[params.blocks]
        training = HeadTraining.of(features, config.augmentation["none"], args.epochs, config.tuner)
        training = dataclasses.replace(training, precision=PRECISION.get(name, "float32"))
        for seed in args.seeds:
            started = time.perf_counter()
            _, restart = train_once(training, params, seed)
            curve = restart.history["val_accuracy"]
            rows.append(
                {
                    "lever": name,
                    "seed": seed,
                    "curve": curve,
                    "best": restart.val_accuracy,
                    "best_epoch": restart.best_epoch + 1,
                    "last": curve[-1],
                    "spread_late": max(curve[3:]) - min(curve[3:]),
                    "s_per_epoch": (time.perf_counter() - started) / len(curve),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.size}px, {args.epochs} epochs, validation accuracy (341 photos)\n")
    print("| lever | seed | val_accuracy by epoch | best (epoch) | last | spread of epochs 4.. | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        curve = " ".join(f"{v:.3f}".lstrip("0") for v in row["curve"])
        print(
            f"| {row['lever']} | {row['seed']} | {curve} | {row['best']:.4f} ({row['best_epoch']}) | {row['last']:.4f} "
            f"| {row['spread_late']:.4f} | {row['s_per_epoch']:.0f} |"
        )
    print("\n| lever | mean best | mean last | mean spread |")
    print("| --- | --- | --- | --- |")
    for name in args.levers:
        mine = [row for row in rows if row["lever"] == name]
        means = {key: sum(row[key] for row in mine) / len(mine) for key in ("best", "last", "spread_late")}
        print(f"| {name} | {means['best']:.4f} | {means['last']:.4f} | {means['spread_late']:.4f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
