"""How many augmented views a search needs: val_accuracy with K = 1, 3, 5, 10 views, and with none.

Extracts (or loads from --work-dir's cache) 10 views of `shear_zoom_flip` for the training photos
at 150px, then trains the default search's two best configurations for 10 epochs (a tune trial)
on the first K views, over several seeds, and prints the mean and spread of the best val_accuracy.
Epoch e trains on view e mod K, so K < 10 reuses views.

    python benchmarks/bench_views.py                       # model.runtime=tensorflow, 3 seeds
    python benchmarks/bench_views.py --seeds 5 model.runtime=onnx-int8
"""

from __future__ import annotations

from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent
CONFIGS = [(0.001, 100, 0.2), (0.0001, 1000, 0.2)]  # (learning_rate, size_inner, droprate)


def main() -> None:
    parser = real_data_parser(__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work-dir", default=".fashion_exp", help="feature cache to use and fill")
    parser.add_argument("overrides", nargs="*", default=["model.runtime=tensorflow"])
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    from fashion_exp.config import load_config
    from fashion_exp.data.images import Decoder
    from fashion_exp.features.features import Features, jobs_for, scan
    from fashion_exp.final.restarts import HeadTraining, train_once
    from fashion_exp.hyperparameters import HeadParams

    config = load_config(
        [
            f"data.root={args.data}",
            f"model.weights={args.weights}",
            "data.image_size=150",
            f"work_dir={args.work_dir}",
            "augmentation.shear_zoom_flip.views=10",
            *args.overrides,
        ]
    )
    checked = scan(config.data, config.work_dir, print)
    decoder = Decoder.for_data(config.data, 150)
    features = Features.open(checked, config.model, decoder, config.work_dir, seed=config.seed, echo=print)
    policies = {name: config.augmentation[name] for name in ("none", "shear_zoom_flip")}
    features.get(jobs_for(policies))
    plain, augmented = features.views(policies["none"]), features.views(policies["shear_zoom_flip"])

    def score(views, params: HeadParams) -> list[float]:
        training = HeadTraining(
            views=tf.constant(views),
            labels=features.train_labels,
            val=(features.val, features.val_labels),
            n_classes=features.n_classes,
            epochs=10,
            batch_size=config.tuner.batch_size,
            validation_batch_size=config.tuner.validation_batch_size,
            objective="val_accuracy",
        )
        return [train_once(training, params, seed)[1].val_accuracy for seed in range(args.seeds)]

    rows = []
    for lr, inner, drop in CONFIGS:
        params = HeadParams(learning_rate=lr, size_inner=inner, droprate=drop, augmentation="shear_zoom_flip")
        for k in (1, 3, 5, 10):
            rows.append((lr, inner, f"{k} views", score(augmented[:k], params)))
            print(rows[-1], flush=True)
        rows.append((lr, inner, "no augmentation", score(plain, params)))
    print(f"\n{'learning_rate':>13} {'size_inner':>10}  {'training views':<16} {'mean val':>8} {'sd':>6}  seeds")
    for lr, inner, what, scores in rows:
        print(f"{lr:>13} {inner:>10}  {what:<16} {np.mean(scores):>8.4f} {np.std(scores):>6.4f}  {len(scores)}")


if __name__ == "__main__":
    main()
