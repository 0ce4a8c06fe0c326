"""What this machine's hardware offers fashion_exp, in one run: extraction per backend, fine-tuning
fp32 against mixed precision, a cold `tune` with model.runtime=auto against tensorflow, and the
service fp32 against auto. Prints the CPU model and flags first, then one table a part.

  extract   img/s of Xception (real photos, batch 32) at 150 and 299 px on every backend, and the
            fraction of the measured sgemm rate it reaches (2 x multiply-adds per image); TensorFlow
            bf16 (Keras mixed_bfloat16) and OpenVINO bf16 are the two bf16 candidates; a bf16 row
            says what actually ran (OpenVINO runs f32 on a CPU without BF16 units)
  finetune  seconds a training epoch of block14 at 299 px (3,068 photos, batch 32, extrapolated
            from timed steps) under float32 and mixed_bfloat16 (TensorFlow emulates bf16 where the
            CPU lacks BF16 units: the row says so)
  tune      wall time of a cold `python -m fashion_exp tune` (empty store and work folder) with
            model.runtime=auto against model.runtime=tensorflow, and the backend auto took
  serve     `python -m fashion_exp serve` with serve.backend=onnx (fp32) against auto: p50/p95 of one
            client, requests/s and p50/p95 of 16 clients (bench_serve.py's measurement; the model
            needs export-onnx first)

    python benchmarks/bench_hardware.py                                   # every part (about 30 min on 2 cores)
    python benchmarks/bench_hardware.py --parts extract finetune          # about 8 minutes
    python benchmarks/bench_hardware.py --parts serve --store /work/run32 # the champion of that folder's mlflow.db
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import real_data_parser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MULTIPLY_ADDS = {150: 1.92e9, 299: 8.36e9}  # Xception without its top (issue 28's count)
BACKENDS = ("tensorflow", "tensorflow-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16")


def cpu_lines() -> list[str]:
    from fashion_exp.hardware import NUMERIC, read_flags

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    flags = read_flags()
    shown = [flag for flag in NUMERIC if flag in flags] or ["none of " + ", ".join(NUMERIC)]
    return [f"CPU: {model}, {os.cpu_count()} cores", f"flags that matter here: {' '.join(shown)}"]


def sgemm_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The best of `repeats` float32 matrix products (numpy's BLAS, every core), in GFLOP/s."""
    a, b = (np.random.default_rng(i).standard_normal((size, size), dtype=np.float32) for i in range(2))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def photos(data: Path, size: int, count: int) -> np.ndarray:
    from fashion_exp.data.images import Decoder

    paths = sorted(Path(data, "validation").rglob("*.jpg"))[:count]
    decoder = Decoder(size, "bilinear", 25_000_000)
    return np.stack([decoder.load(p) for p in paths])


def extraction(args, size: int, gflops: float, work: Path) -> list[tuple]:
    from fashion_exp.config import load_config
    from fashion_exp.features.backbone import build_backbone
    from fashion_exp.features.choice import run_on
    from fashion_exp.features.onnx_files import Calibration, mean_cosine
    from fashion_exp.features.runtime import open_runner

    images = photos(args.data, size, args.photos)
    model = load_config([f"model.weights={args.weights}"]).model
    backbone = build_backbone(model, size, seed=0)
    count = model.int8_calibration_photos
    calibration = Calibration(
        f"bench-{size}", lambda: images[:: max(1, len(images) // count)][:count], count, model.int8_min_cosine
    )
    rows, reference = [], None
    for name in BACKENDS:
        if name == "tensorflow-bf16":
            runner, precision = TensorFlowBf16(args.weights, size), "bf16"
        else:
            runner = open_runner(backbone, name, 32, work, calibration)
            precision = None
        features, speed = run_on(runner, images, 32)
        if reference is None:
            reference = features
        precision = precision or runner.precision
        fraction = speed * 2 * MULTIPLY_ADDS[size] / (gflops * 1e9)
        rows.append((size, name, precision, speed, fraction, mean_cosine(features, reference)))
    return rows


class TensorFlowBf16:
    """Keras' Xception under mixed_bfloat16 (oneDNN's bf16 where the CPU has it), same weights."""

    def __init__(self, weights: str, size: int):
        import keras

        keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            base = keras.applications.Xception(include_top=False, weights=str(weights), input_shape=(size, size, 3))
        finally:
            keras.config.set_dtype_policy("float32")
        inputs = keras.Input((size, size, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(keras.ops.cast(inputs, "float32"))
        self.model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(base(x, training=False)))

    def features(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(images), np.float32)


def finetune(args) -> list[tuple]:
    """s/epoch of the block14 fine-tune at 299 px under each policy (timed steps, extrapolated)."""
    from fashion_exp.config import load_config
    from fashion_exp.features.backbone import build_backbone
    from fashion_exp.head.model import HeadInputs, new_head
    from fashion_exp.hyperparameters import HeadParams

    model = load_config([f"model.weights={args.weights}"]).model
    backbone = build_backbone(model, 299, seed=0, blocks=1)
    maps = np.random.default_rng(0).normal(size=(32 * (args.steps + 1), *backbone.feature_shape)).astype(np.float32)
    labels = np.arange(len(maps)) % 10
    params = HeadParams(0.001, 1000, 0.0, "none", blocks=1, block_lr=0.1)
    rows = []
    for policy in ("float32", "mixed_bfloat16"):
        head = new_head(HeadInputs(backbone.feature_shape, 10, 32, backbone.top, policy), params, 0, len(maps))
        head.fit(maps[:32], labels[:32], batch_size=32, epochs=1, verbose=0)  # compile, warm-up
        seconds = _timed(lambda h=head: h.fit(maps[32:], labels[32:], batch_size=32, epochs=1, verbose=0))
        rows.append((policy, seconds / args.steps * np.ceil(3068 / 32)))
    return rows


def cold_tune(args) -> list[tuple]:
    """A cold default tune per model.runtime: its wall time and the backend it ran."""
    rows = []
    for runtime in ("tensorflow", "auto"):
        with tempfile.TemporaryDirectory() as folder:
            command = [
                *(sys.executable, "-m", "fashion_exp", "tune", f"model.runtime={runtime}"),
                *(f"tuner.max_trials={args.trials}", f"work_dir={folder}/work"),
                *(
                    f"tracking.uri=sqlite:///{folder}/mlflow.db",
                    f"data.root={args.data}",
                    f"model.weights={args.weights}",
                ),
            ]
            started = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - started
            if done.returncode:
                raise SystemExit(f"tune model.runtime={runtime} failed: {done.stderr[-2000:]}")
            chosen = next((line for line in done.stdout.splitlines() if line.startswith("Backbone runtime: ")), "?")
            rows.append((runtime, wall, chosen.removeprefix("Backbone runtime: ")))
    return rows


def serve(args) -> dict[str, dict]:
    sys.path.insert(0, str(HERE))
    import bench_serve

    bench_serve.MODES.update({"fp32": ["serve.backend=onnx"], "auto": []})
    settings = type(
        "Settings",
        (),
        {"single": args.single, "requests": args.requests, "clients": 16, "model": args.model, "cwd": args.store},
    )
    settings.overrides = [f"tracking.uri=sqlite:///{Path(args.store).resolve()}/mlflow.db"]
    chosen = {}
    for mode in ("fp32", "auto"):
        chosen[mode] = bench_serve.run_mode(mode, settings, sorted(Path(args.data, "test").rglob("*.jpg"))[:50])
    return chosen


def main() -> None:
    parser = real_data_parser(__doc__)
    parser.add_argument("--parts", nargs="+", default=["extract", "finetune", "tune", "serve"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[150, 299])
    parser.add_argument("--photos", type=int, default=96, help="validation photos each backend extracts")
    parser.add_argument("--steps", type=int, default=6, help="timed fine-tuning steps of 32 photos")
    parser.add_argument("--trials", type=int, default=5, help="tuner.max_trials of each cold tune")
    parser.add_argument("--store", default=".", help="folder whose mlflow.db holds the served model")
    parser.add_argument("--model", help="the served model (default: the champion)")
    parser.add_argument("--single", type=int, default=40)
    parser.add_argument("--requests", type=int, default=160)
    args = parser.parse_args()
    print("\n".join(cpu_lines()), flush=True)
    if "extract" in args.parts:
        gflops = sgemm_gflops()
        print(f"sgemm (numpy float32 2048x2048, best of 5): {gflops:.1f} GFLOP/s", flush=True)
        with tempfile.TemporaryDirectory() as work:
            rows = [row for size in args.sizes for row in extraction(args, size, gflops, Path(work))]
        print(f"\nextraction ({args.photos} validation photos, batch 32, after one warm-up batch)")
        print(f"{'size':>5} {'backend':<16} {'ran':<5} {'img/s':>7} {'x tf':>6} {'of sgemm':>9} {'cosine':>8}")
        for size, name, precision, speed, fraction, cosine in rows:
            tf = next(r[3] for r in rows if r[0] == size and r[1] == "tensorflow")
            print(
                f"{size:>5} {name:<16} {precision:<5} {speed:>7.1f} {speed / tf:>6.2f} {fraction:>9.0%} {cosine:>8.5f}"
            )
    if "finetune" in args.parts:
        rows = finetune(args)
        print(f"\nfine-tuning block14 at 299 px ({args.steps} timed steps of 32, extrapolated to 3,068 photos)")
        for policy, seconds in rows:
            print(f"  {policy:<16} {seconds:>7.1f} s/epoch  {rows[0][1] / seconds:>5.2f}x float32")
    if "tune" in args.parts:
        rows = cold_tune(args)
        print(f"\ncold default tune (tuner.max_trials={args.trials}, empty store and work folder)")
        for runtime, wall, chosen in rows:
            print(f"  model.runtime={runtime:<11} {wall:>7.1f} s  {rows[0][1] / wall:>5.2f}x  ran: {chosen}")
    if "serve" in args.parts:
        results = serve(args)
        print(f"\nserve ({args.single} single requests; 16 clients: {args.requests} requests; batched)")
        print(f"{'backend':<8} {'1 p50 ms':>9} {'1 p95 ms':>9} {'16 req/s':>9} {'16 p50 ms':>10} {'16 p95 ms':>10}")
        for mode, r in results.items():
            print(
                f"{mode:<8} {r['single_p50_ms']:>9.1f} {r['single_p95_ms']:>9.1f} {r['throughput']:>9.1f} "
                f"{r['p50_ms']:>10.1f} {r['p95_ms']:>10.1f}"
            )


if __name__ == "__main__":
    main()
