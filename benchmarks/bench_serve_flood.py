"""A flood of the worst uploads serve allows: does it stay up, in bounded memory, answering 503
rather than failing?

A real uvicorn server (the product's app, with the serve.* defaults and a stand-in model, so that
decoding is what is measured) in its own process; --clients threads send, for --seconds, the
largest images the defaults admit: a 25-megapixel PNG (no draft mode: a full decode) and a
24-megapixel JPEG (decoded in draft mode). Prints the answers by status code, the server's peak
RSS (VmHWM) and whether it still answers /health. Goal (issue 26): peak RSS under 3 GB, no 5xx
other than 503.

    python benchmarks/bench_serve_flood.py --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import sys, numpy as np, uvicorn
from fashion_exp.config import load_config
from fashion_exp.serving.app import ServeSettings, create_app

class StandIn:
    class_names = ["a", "b", "c"]
    image_size, interpolation = 299, "nearest"
    name, version, run_id = "stand-in", "1", None
    def predict(self, images, batch_size):
        return np.full((len(images), 3), 1 / 3, np.float32)

settings = ServeSettings.from_config(load_config([]))
uvicorn.run(create_app(StandIn(), settings), host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
            limit_concurrency=load_config([]).serve.max_connections, timeout_keep_alive=5)
"""


def worst_uploads() -> dict[str, bytes]:
    """The largest photos serve's defaults admit (25,000,000 pixels, 10 MB)."""
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(np.tile(tile, (100, 100, 1))).save(png, format="PNG", compress_level=9)  # 5000 x 5000
    jpeg = io.BytesIO()
    blocks = np.kron(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), np.ones((100, 100, 1), np.uint8))
    Image.fromarray(blocks).save(jpeg, format="JPEG", quality=90)  # 6000 x 4000, under the 10 MB upload limit
    return {"png": png.getvalue(), "jpeg": jpeg.getvalue()}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood(url: str, uploads: dict[str, bytes], clients: int, seconds: float) -> Counter:
    answers: Counter = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        body = list(uploads.values())[index % len(uploads)]
        with httpx.Client(timeout=60) as session:
            while time.monotonic() < stop:
                try:
                    status = session.post(f"{url}/predict", content=body).status_code
                except httpx.HTTPError as err:
                    status = type(err).__name__
                with lock:
                    answers[status] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    uploads = worst_uploads()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(args.port)], cwd=ROOT)
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        before = peak_rss_mb(server.pid)
        answers = flood(url, uploads, args.clients, args.seconds)
        up = httpx.get(f"{url}/health", timeout=10).status_code == 200
        print(
            f"uploads: PNG {len(uploads['png']) / 1e6:.1f} MB (25 MP), JPEG {len(uploads['jpeg']) / 1e6:.1f} MB (24 MP)"
        )
        print(f"| clients | seconds | answers by status | peak RSS MB (idle {before:.0f}) | up after |")
        print("| --- | --- | --- | --- | --- |")
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items(), key=str))
        print(f"| {args.clients} | {args.seconds:g} | {counts} | {peak_rss_mb(server.pid):.0f} | {up} |")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
