"""Would flip test-time augmentation help a shipped model? Scored on the VALIDATION split only.

Each validation photo is classified as is, mirrored left-right, and as the mean of both
probabilities (what a flip-TTA model would serve, at twice the backbone cost). The test split is
not read: this is a decision about the model, and the test split never makes one.

    python benchmarks/bench_tta.py --store DIR [--model models:/fashion-classifier@champion]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from common import real_data_parser


def main() -> None:
    parser = real_data_parser(__doc__)
    parser.add_argument("--store", required=True, help="folder whose mlflow.db holds --model")
    parser.add_argument("--model", default="models:/fashion-classifier@champion")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from fashion_exp.config import load_config
    from fashion_exp.data.dataset import VALIDATION, scan_configured
    from fashion_exp.data.images import Decoder
    from fashion_exp.final.evaluate import score
    from fashion_exp.tracking import registry

    store = Path(args.store).resolve()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    config = load_config([f"tracking.uri={uri}", f"data.root={args.data}", f"work_dir={store / 'work'}"])
    loaded = registry.load(args.model, uri)
    dataset = scan_configured(config.data, [VALIDATION], config.work_dir)
    decoder = Decoder.for_data(config.data, loaded.image_size, loaded.interpolation)
    labels = dataset.labels(VALIDATION)
    start = time.perf_counter()
    images = np.concatenate(list(decoder.load_batches(dataset.paths(VALIDATION), args.batch_size, "validation")))
    plain = loaded.predict(images, args.batch_size)
    mirrored = loaded.predict(np.ascontiguousarray(images[:, :, ::-1]), args.batch_size)
    seconds = time.perf_counter() - start

    print(f"\n{args.model}, {len(labels)} validation photos at {loaded.image_size}px ({seconds:.0f} s)")
    print(f"{'inputs':<22}{'val_accuracy':>14}{'correct':>10}{'val_loss':>10}")
    for name, probabilities in (
        ("as is", plain),
        ("mirrored", mirrored),
        ("mean of both (TTA)", (plain + mirrored) / 2),
    ):
        result = score(probabilities, labels, loaded.class_names)
        correct = int(round(result.accuracy * len(labels)))
        print(f"{name:<22}{result.accuracy:>14.4f}{correct:>10}{result.loss:>10.4f}")


if __name__ == "__main__":
    main()
