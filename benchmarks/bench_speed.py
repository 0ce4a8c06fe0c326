"""How fast the product is, end to end, in one run on this machine: one table.

  1. extraction per runtime (tensorflow, onnx fp32, onnx-int8) at 150 and 299 px, over --photos
     training photos through the product's path (Extractor.run: two decoding threads ahead of
     the backbone), with the time the backbone spent waiting for decoded images (0 s: decoding
     never holds the cores up) and decoding alone (the same two threads, no backbone);
  2. a cold default `tune` with model.runtime=tensorflow, then with the default (auto), each with
     an empty feature cache and its own MLflow store, and the warm auto tune (fresh=true): wall
     time, extraction time, best val_accuracy;
  3. the service (benchmarks/bench_serve.py's modes) on --serve-model: `keras-1` (one photo at a
     time on Keras, the service before this work) against the micro-batched backends, single
     requests and 16 clients at once.

Goals (issue 11): auto tune >= 3x faster than tensorflow with best val_accuracy within 0.5
points; 16-client requests/s >= 2x keras-1 with a lower p95.

    python benchmarks/bench_speed.py --serve-model models:/fashion-classifier@champion --serve-cwd DIR
    python benchmarks/bench_speed.py --skip-tune --skip-serve      # extraction rows only (minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
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
RUNTIMES = ("tensorflow", "onnx", "onnx-int8")
SERVE_MODES = ("keras-1", "keras-batched", "onnx-batched", "onnx-int8-batched", "auto")  # --serve-modes picks


def parse_args() -> argparse.Namespace:
    parser = real_data_parser(__doc__)
    parser.add_argument("--photos", type=int, default=256, help="training photos per extraction measurement")
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 299])
    parser.add_argument("--work-dir", help="where everything is written (default: a temporary folder)")
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--serve-model", help="model URI for the service rows (default: the champion)")
    parser.add_argument("--serve-cwd", default=os.getcwd(), help="folder whose mlflow.db holds --serve-model")
    parser.add_argument("--requests", type=int, default=200, help="requests the 16 clients send")
    parser.add_argument("--serve-modes", nargs="+", default=list(SERVE_MODES), help="bench_serve modes to run")
    parser.add_argument("--out", default=HERE / "results" / "bench_speed.json")
    return parser.parse_args()


def extraction(args, work: Path) -> list[dict]:
    """Rows: per size and runtime, img/s through Extractor.run and where the time went."""
    import numpy as np

    from fashion_exp.config import load_config
    from fashion_exp.data.augment import IDENTITY
    from fashion_exp.data.dataset import TRAIN
    from fashion_exp.data.images import Decoder
    from fashion_exp.features import extract
    from fashion_exp.features.cache import FeatureCache
    from fashion_exp.features.features import Features, scan
    from fashion_exp.features.onnx_files import calibration
    from fashion_exp.features.runtime import open_runner

    rows = []
    for size in args.sizes:
        config = load_config([f"data.root={args.data}", f"model.weights={args.weights}", f"work_dir={work}"])
        quiet = lambda *_: None  # noqa: E731
        checked = scan(config.data, config.work_dir, quiet)
        decoder = Decoder.for_data(config.data, size)
        features = Features.open(checked, config.model, decoder, config.work_dir, seed=config.seed, echo=quiet)
        full = features.dataset
        subset = dataclasses.replace(full, splits={TRAIN: full.splits[TRAIN][: args.photos]})
        job = extract.jobs_for_policy(TRAIN, IDENTITY)[0]
        start = time.perf_counter()
        for _ in extract._batches(subset, job, decoder, config.model.batch_size, 0):
            pass
        decode_rate = args.photos / (time.perf_counter() - start)
        for runtime in RUNTIMES:
            runner = open_runner(
                features.backbone,
                runtime,
                config.model.batch_size,
                work,
                calibration(full, decoder, config.model) if runtime == "onnx-int8" else None,
            )
            runner.features(np.zeros((2, size, size, 3), np.uint8))  # export / quantize / trace: not timed
            cache = FeatureCache(Path(tempfile.mkdtemp(dir=work)))
            stages = extract.StageTimes()
            extractor = extract.Extractor(runner, subset, decoder, cache, config.model.batch_size, 0, stages=stages)
            start = time.perf_counter()
            extractor.run([job])
            wall = time.perf_counter() - start
            rows.append(
                {
                    "size": size,
                    "runtime": runtime,
                    "img_per_s": args.photos / wall,
                    "backbone_s": stages.backbone,
                    "waiting_s": stages.waiting_for_images,
                    "decode_only_img_per_s": decode_rate,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def tune(args, work: Path, name: str, overrides: list[str], fresh: bool = False) -> dict:
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "fashion_exp",
        "tune",
        f"data.root={args.data}",
        f"model.weights={args.weights}",
        f"work_dir={folder / 'cache'}",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
        *overrides,
        *(["fresh=true"] if fresh else []),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    log = folder / f"tune{'-warm' if fresh else ''}.log"
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"tune {name} failed ({done.returncode}); see {log}\n{done.stderr[-2000:]}")
    extraction_s = re.search(r"extraction ([0-9.]+) s", done.stdout)
    best = re.search(r"Best trial \S+: val_accuracy ([0-9.]+)", done.stdout)
    row = {
        "tune": name + (" warm" if fresh else " cold"),
        "wall_s": wall,
        "extraction_s": float(extraction_s.group(1)) if extraction_s else float("nan"),
        "best_val": float(best.group(1)) if best else float("nan"),
    }
    print(json.dumps(row), flush=True)
    return row


def serving(args) -> dict:
    sys.path.insert(0, str(HERE))
    import bench_serve

    photos = sorted(Path(args.data, "test").rglob("*.jpg"))[:50]
    options = argparse.Namespace(
        model=args.serve_model, single=50, requests=args.requests, clients=16, cwd=args.serve_cwd, overrides=[]
    )
    results = {}
    for mode in args.serve_modes:
        results[mode] = bench_serve.run_mode(mode, options, photos)
        print(json.dumps({mode: results[mode]}), flush=True)
    return results


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"extraction": extraction(args, work / "extraction")}
    if not args.skip_tune:
        results["tune"] = [
            tune(args, work, "tensorflow", ["model.runtime=tensorflow"]),
            tune(args, work, "auto", []),
            tune(args, work, "auto", [], fresh=True),
        ]
    if not args.skip_serve:
        results["serve"] = serving(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    report(results, args)
    print(f"\nresults: {args.out}   logs and stores: {work}")


def report(results: dict, args) -> None:
    print(f"\nExtraction, {args.photos} training photos per row (decode + backbone, product path)")
    print(
        f"{'size':>4}  {'runtime':<10} {'img/s':>6} {'x TF':>5} {'backbone s':>10} {'waiting s':>9} "
        f"{'decode-only img/s':>17}"
    )
    reference = {}
    for r in results["extraction"]:
        reference.setdefault(r["size"], r["img_per_s"])
        print(
            f"{r['size']:>4}  {r['runtime']:<10} {r['img_per_s']:>6.1f} {r['img_per_s'] / reference[r['size']]:>5.2f} "
            f"{r['backbone_s']:>10.1f} {r['waiting_s']:>9.2f} {r['decode_only_img_per_s']:>17.1f}"
        )
    if "tune" in results:
        tf_cold, auto_cold, auto_warm = results["tune"]
        print("\nDefault tune at 150 px (20 Bayesian trials), each cold run on an empty feature cache")
        print(f"{'run':<18} {'wall s':>7} {'extraction s':>12} {'best val':>8}")
        for r in results["tune"]:
            print(f"{r['tune']:<18} {r['wall_s']:>7.0f} {r['extraction_s']:>12.0f} {r['best_val']:>8.4f}")
        print(
            f"auto cold vs tensorflow cold: {tf_cold['wall_s'] / auto_cold['wall_s']:.2f}x faster (goal >= 3x), "
            f"best val {100 * (auto_cold['best_val'] - tf_cold['best_val']):+.2f} points (goal within 0.5); "
            f"warm vs cold: {auto_cold['wall_s'] / auto_warm['wall_s']:.1f}x"
        )
    if "serve" in results:
        serve = results["serve"]
        model = args.serve_model or "the champion"
        print(f"\nService on {model}: 50 single requests, then 16 clients x {args.requests}")
        print(f"{'measure':<26}" + "".join(f"{mode:>18}" for mode in serve))
        for key, label in (
            ("single_p50_ms", "single p50 ms"),
            ("single_p95_ms", "single p95 ms"),
            ("throughput", "16 clients requests/s"),
            ("p50_ms", "16 clients p50 ms"),
            ("p95_ms", "16 clients p95 ms"),
            ("peak_mb", "server peak RSS MiB"),
        ):
            print(f"{label:<26}" + "".join(f"{r[key]:>18.1f}" for r in serve.values()))
        base = serve["keras-1"]["throughput"]
        gains = ", ".join(f"{m} {r['throughput'] / base:.2f}x" for m, r in serve.items())
        print(f"16-client throughput vs keras-1: {gains}")


if __name__ == "__main__":
    main()
