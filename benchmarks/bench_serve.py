"""Benchmark the Fashion Classification Service: backends (Keras, ONNX) and micro-batching, side by side.

Starts `python -m fashion_exp serve` on 127.0.0.1 once per mode: each backend (keras, onnx fp32,
onnx-int8; the ONNX files come from export-onnx) with serve.max_batch=1 (one photo at a time: the
service before micro-batching) and with batching (serve.max_batch=16), and `auto` (the defaults).
Real test photos are sent from this process: single requests one after another (p50/p95 latency),
then --clients clients at once (requests/s, p50/p95). Also the server's peak memory (VmHWM).

    python benchmarks/bench_serve.py                     # the champion, 50 single + 200 concurrent requests
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


MODES = {
    "keras-1": ["serve.backend=keras", "serve.max_batch=1"],  # one photo at a time: the service before batching
    "keras-batched": ["serve.backend=keras", "serve.max_batch=16"],
    "onnx-1": ["serve.backend=onnx", "serve.max_batch=1"],
    "onnx-batched": ["serve.backend=onnx", "serve.max_batch=16"],
    "onnx-int8-1": ["serve.backend=onnx-int8", "serve.max_batch=1"],
    "onnx-int8-batched": ["serve.backend=onnx-int8", "serve.max_batch=16"],
    "auto": [],  # the defaults: serve.backend=auto (int8 where export-onnx measured that it holds), batched
}


def run_mode(mode: str, args, photos: list[Path]) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "fashion_exp", "serve", f"serve.port={port}", *MODES[mode], *args.overrides]
    if args.model:
        command += ["--model", args.model]
    server = subprocess.Popen(command, cwd=args.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"{mode} server exited: {server.stdout.read()[-2000:]}")
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

            single = [one(i) for i in range(args.single)]
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                latencies = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
        return {
            "single_p50_ms": 1000 * float(np.percentile(single, 50)),
            "single_p95_ms": 1000 * float(np.percentile(single, 95)),
            "throughput": args.requests / wall,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "peak_mb": peak_rss_mb(server.pid),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model URI (default: the champion)")
    parser.add_argument("--single", type=int, default=50, help="single requests, one after another")
    parser.add_argument("--requests", type=int, default=200, help="requests sent by the concurrent clients")
    parser.add_argument("--clients", type=int, default=16, help="clients sending at once")
    parser.add_argument("--mode", action="append", choices=list(MODES), help="a mode to run (repeat; default: all)")
    parser.add_argument("--photos", default=os.environ.get("FASHION_DATA", SHARED / "data/clothing-dataset-small"))
    parser.add_argument("--cwd", default=os.getcwd(), help="folder whose mlflow.db holds the model")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for serve")
    args = parser.parse_args()
    photos = sorted(Path(args.photos, "test").rglob("*.jpg"))[:50]
    if not photos:
        raise SystemExit(f"no test photos under {args.photos}/test")
    results = {mode: run_mode(mode, args, photos) for mode in args.mode or MODES}
    print(
        f"\n{len(photos)} real test photos; single: {args.single} requests one after another; "
        f"{args.clients} clients: {args.requests} requests"
    )
    print(f"{'measure':<28}" + "".join(f"{mode:>15}" for mode in results))
    print("-" * (28 + 15 * len(results)))
    for key, label in (
        ("single_p50_ms", "single p50 (ms)"),
        ("single_p95_ms", "single p95 (ms)"),
        ("throughput", f"{args.clients} clients: requests/s"),
        ("p50_ms", f"{args.clients} clients: p50 (ms)"),
        ("p95_ms", f"{args.clients} clients: p95 (ms)"),
        ("peak_mb", "server peak RSS (MiB)"),
    ):
        print(f"{label:<28}" + "".join(f"{r[key]:>15.1f}" for r in results.values()))


if __name__ == "__main__":
    main()
