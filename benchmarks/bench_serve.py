"""Benchmark the Fashion Classification Service: Keras vs ONNX backends, side by side.

Starts `python -m fashion_exp serve` on 127.0.0.1 for each backend, sends real test photos from
this process with bounded concurrency and a bounded request count, and prints p50/p95 latency,
throughput and the server's peak memory (VmHWM).

    python benchmarks/bench_serve.py                     # the champion, 200 requests, 4 at a time
    python benchmarks/bench_serve.py --model models:/fashion-classifier/3 --requests 100
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_backend(backend: str, args, photos: list[Path]) -> dict:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "fashion_exp",
        "serve",
        f"serve.port={port}",
        f"serve.backend={backend}",
        *args.overrides,
    ]
    if args.model:
        command += ["--model", args.model]
    server = subprocess.Popen(command, cwd=args.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"{backend} server exited: {server.stdout.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        bodies = [p.read_bytes() for p in photos]
        with httpx.Client(timeout=60) as client:
            for body in bodies[:3]:  # warm-up
                client.post(f"{url}/predict", content=body, headers={"content-type": "image/jpeg"})

            def one(i: int) -> float:
                start = time.perf_counter()
                answer = client.post(
                    f"{url}/predict", content=bodies[i % len(bodies)], headers={"content-type": "image/jpeg"}
                )
                answer.raise_for_status()
                return time.perf_counter() - start

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                latencies = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
        return {
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "throughput": args.requests / wall,
            "peak_mb": peak_rss_mb(server.pid),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model URI (default: the champion)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--photos", default=os.environ.get("FASHION_DATA", SHARED / "data/clothing-dataset-small"))
    parser.add_argument("--cwd", default=os.getcwd(), help="folder whose mlflow.db holds the model")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for serve")
    args = parser.parse_args()
    photos = sorted(Path(args.photos, "test").rglob("*.jpg"))[:50]
    if not photos:
        raise SystemExit(f"no test photos under {args.photos}/test")
    results = {backend: run_backend(backend, args, photos) for backend in ("keras", "onnx")}
    print(f"\n{args.requests} requests, {args.concurrency} at a time, {len(photos)} real test photos")
    print(f"{'measure':<22}{'keras':>12}{'onnx':>12}")
    print("-" * 46)
    for key, label in (
        ("p50_ms", "p50 latency (ms)"),
        ("p95_ms", "p95 latency (ms)"),
        ("throughput", "throughput (req/s)"),
        ("peak_mb", "server peak RSS (MiB)"),
    ):
        print(f"{label:<22}{results['keras'][key]:>12.1f}{results['onnx'][key]:>12.1f}")


if __name__ == "__main__":
    main()
