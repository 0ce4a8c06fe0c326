"""What a fine-tuning trial costs on this machine, per number of trained blocks and image size.

For each size and each blocks value (0 = frozen backbone, 1 = block14, 2 = block13 + block14), on
the product's own parts (build_backbone cut below the blocks, on --runtime as a search runs it;
build_head with a fresh copy of the blocks; the cached-map batches of map_dataset):

  bytes/photo   one photo's cached features (float16 maps, float32 pooled)
  search GB     the cache a default fine-tuning search fills for that value: validation + train
                un-augmented + shear_zoom_flip's 3 views (--views)
  extract img/s the frozen part, over --photos training photos
  train img/s   one epoch of the head (and blocks) over the same photos' cached features, after a
                warm-up epoch; s/epoch projects it to the 3,068 training photos
  keras img/s   the same with Keras' own SeparableConv2D in the blocks instead of the product's
                MatmulSeparableConv2D (features/layers.py): what that layer is worth
  val s         scoring the 341 validation photos once (every epoch does)

    python benchmarks/bench_finetune.py --sizes 150 299 --photos 256   # about 10 minutes
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import real_data_parser

HERE = Path(__file__).resolve().parent
TRAIN_PHOTOS, VAL_PHOTOS = 3068, 341


def parse_args() -> argparse.Namespace:
    parser = real_data_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 299])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--photos", type=int, default=256, help="training photos timed per setting")
    parser.add_argument("--views", type=int, default=3, help="views of shear_zoom_flip (conf/augmentation)")
    parser.add_argument("--runtime", default="onnx", help="model.runtime of the frozen part")
    parser.add_argument("--work-dir", default=".fashion_exp", help="where ONNX files are kept")
    parser.add_argument("--out", default=HERE / "results" / "bench_finetune.json", help="JSON results file")
    return parser.parse_args()


def measure(args, size: int, blocks: int) -> dict:
    import numpy as np

    from fashion_exp.config import load_config
    from fashion_exp.data.dataset import TRAIN, scan_configured
    from fashion_exp.data.images import Decoder
    from fashion_exp.features.backbone import build_backbone, fresh_top
    from fashion_exp.features.cache import bytes_per_image, stored_dtype
    from fashion_exp.features.layers import plain_copy
    from fashion_exp.features.runtime import open_runner, resolve
    from fashion_exp.head.fit import Batching, Rows, fit_on_views, steps_for, training_views
    from fashion_exp.head.model import build_head
    from fashion_exp.hyperparameters import HeadParams

    config = load_config(
        [f"data.root={args.data}", f"model.weights={args.weights}", f"model.runtime={args.runtime}"]
        + [f"data.image_size={size}", f"work_dir={args.work_dir}"]
    )
    dataset = scan_configured(config.data, [TRAIN], config.work_dir)
    decoder = Decoder.for_data(config.data, size)
    paths = dataset.paths(TRAIN)[:: max(1, TRAIN_PHOTOS // args.photos)][: args.photos]
    labels = dataset.labels(TRAIN)[:: max(1, TRAIN_PHOTOS // args.photos)][: args.photos]
    images = np.stack([decoder.load(p) for p in paths])
    backbone = build_backbone(config.model, size, config.seed, blocks)
    runner = open_runner(backbone, resolve(args.runtime, exact=False, cut=blocks > 0), 32, config.work_dir)
    runner.features(images[:32])  # export / compile outside the timing
    started = time.perf_counter()
    features = np.concatenate([runner.features(images[i : i + 32]) for i in range(0, len(images), 32)])
    extract = len(images) / (time.perf_counter() - started)
    features = features.astype(stored_dtype(features.shape))
    params = HeadParams(0.001, 100, 0.2, "none", blocks=blocks, block_lr=0.1)
    top = fresh_top(backbone.top) if blocks else None
    head = build_head(features.shape[1:], 10, params, 0, steps_for(len(labels), 32), top)
    views = training_views(features[None] if not blocks else [features])
    val = (np.asarray(features[: min(VAL_PHOTOS, len(labels))], np.float32), labels[: min(VAL_PHOTOS, len(labels))])

    def train_rate(head) -> tuple[float, float]:
        """(training img/s, seconds to score the validation photos) of one epoch after a warm-up."""
        rows, batching = Rows(views, labels, val), Batching(32, 256, 0)
        fit_on_views(head, rows, batching, 1)  # warm-up: tracing
        started = time.perf_counter()
        fit_on_views(head, rows, batching, 2, initial_epoch=1)
        epoch_and_val = time.perf_counter() - started
        started = time.perf_counter()
        head.predict(val[0], batch_size=256, verbose=0)
        val_seconds = (time.perf_counter() - started) * VAL_PHOTOS / len(val[1])
        return len(labels) / max(epoch_and_val - val_seconds * len(val[1]) / VAL_PHOTOS, 1e-9), val_seconds

    rate, val_seconds = train_rate(head)
    keras_rate = rate
    if blocks:
        plain = build_head(features.shape[1:], 10, params, 0, steps_for(len(labels), 32), plain_copy(top))
        keras_rate, _ = train_rate(plain)
    size_bytes = bytes_per_image(backbone.feature_shape)
    return {
        "size": size,
        "blocks": blocks,
        "shape": list(backbone.feature_shape),
        "trained_weights": int(sum(np.prod(w.shape) for w in top.trainable_weights)) if top else 0,
        "bytes_per_photo": size_bytes,
        "search_gb": size_bytes * (VAL_PHOTOS + TRAIN_PHOTOS * (1 + args.views)) / 1e9,
        "extract_img_s": extract,
        "train_img_s": rate,
        "keras_img_s": keras_rate,
        "epoch_s": TRAIN_PHOTOS / rate,
        "val_s": val_seconds,
    }


def main() -> None:
    args = parse_args()
    rows = []
    for size in args.sizes:
        for blocks in args.blocks:
            rows.append(measure(args, size, blocks))
            print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"Fine-tuning cost, {args.photos} training photos timed per row (runtime {args.runtime} for the frozen part)")
    header = f"{'size':>5} {'blocks':>6} {'cached shape':>14} {'block wts':>9} {'bytes/photo':>11} {'search GB':>9}"
    print(header + f" {'extract img/s':>13} {'train img/s':>11} {'keras img/s':>11} {'s/epoch':>8} {'val s':>6}")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{r['size']:>5} {r['blocks']:>6} {shape:>14} {r['trained_weights'] / 1e6:>8.2f}M"
            f" {r['bytes_per_photo']:>11,} {r['search_gb']:>9.2f} {r['extract_img_s']:>13.1f}"
            f" {r['train_img_s']:>11.1f} {r['keras_img_s']:>11.1f} {r['epoch_s']:>8.1f} {r['val_s']:>6.1f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
