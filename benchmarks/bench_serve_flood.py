"""A flood of the worst uploads serve allows, and slow sockets: does it stay up, in bounded memory,
answering /health and real photos at once, and 503 rather than failing?

A real uvicorn server in its own process: the product's app with the serve.* defaults and a
stand-in model (decoding is what is measured), or `python -m fashion_exp serve` on a registered
model (--model, --tracking-uri). For --seconds, --clients threads send the largest images the
defaults admit, in turn: a 25-megapixel RGBA PNG of about 100 KB (the issue's: 100 MB once
decoded), a 25-megapixel noisy PNG and a 24-megapixel JPEG (draft mode); --slow-sockets sockets
send `GET /health HTTP/1.1` without ever ending their headers (reopened when the server closes
them); a probe asks /health and classifies a small real photo every half second. Prints the
answers by status code, the probe's slowest answers, the server's peak RSS (VmHWM) and whether it
still answers /health. Goals (issue 36): peak RSS under 1.5 GB with the real model, /health 200 and
the photo answered within 2 s all the while.

    python benchmarks/bench_serve_flood.py --clients 40 --seconds 60 --slow-sockets 200
    python benchmarks/bench_serve_flood.py --model models:/fashion-classifier/1 --tracking-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import argparse
import io
import socket
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
from fashion_exp.serving.connections import uvicorn_options

class StandIn:
    class_names = ["a", "b", "c"]
    image_size, interpolation = 299, "nearest"
    name, version, run_id = "stand-in", "1", None
    def predict(self, images, batch_size):
        return np.full((len(images), 3), 1 / 3, np.float32)

settings = ServeSettings.from_config(load_config([]))
uvicorn.run(create_app(StandIn(), settings), host="127.0.0.1", port=int(sys.argv[1]), log_level="error",
            **uvicorn_options(load_config([]).serve))
"""


def worst_uploads() -> dict[str, bytes]:
    """The largest photos serve's defaults admit (25,000,000 pixels, 10 MB)."""
    rgba = io.BytesIO()
    Image.new("RGBA", (5000, 5000), (200, 40, 40, 128)).save(rgba, format="PNG")  # ~100 KB, 100 MB decoded
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(np.tile(tile, (100, 100, 1))).save(png, format="PNG", compress_level=9)  # 5000 x 5000
    jpeg = io.BytesIO()
    blocks = np.kron(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), np.ones((100, 100, 1), np.uint8))
    Image.fromarray(blocks).save(jpeg, format="JPEG", quality=90)  # 6000 x 4000, under the 10 MB upload limit
    return {"rgba": rgba.getvalue(), "png": png.getvalue(), "jpeg": jpeg.getvalue()}


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


def slow_sockets(port: int, count: int, stop: threading.Event) -> threading.Thread:
    """`count` sockets that never end their headers, each reopened when the server closes it."""

    def hold() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            while len(held) < count:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    sock.setblocking(False)
                    held.append(sock)
                except OSError:
                    break
            for sock in list(held):
                try:
                    if sock.recv(100) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                sock.close()
                held.remove(sock)
            stop.wait(0.2)
        for sock in held:
            sock.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def probe(url: str, photo: bytes, stop: threading.Event, seen: dict) -> threading.Thread:
    """/health and one small photo every half second: the slowest answer and the failures."""

    def ask() -> None:
        with httpx.Client(timeout=30) as session:
            while not stop.is_set():
                for what, call in (
                    ("health", lambda: session.get(f"{url}/health")),
                    ("photo", lambda: session.post(f"{url}/predict", content=photo)),
                ):
                    started = time.monotonic()
                    try:
                        status = call().status_code
                    except httpx.HTTPError as err:
                        status = type(err).__name__
                    seen[what]["slowest"] = max(seen[what]["slowest"], time.monotonic() - started)
                    if status != 200:
                        seen[what]["failed"] += 1
                    seen[what]["asked"] += 1
                stop.wait(0.5)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread


def start_server(args) -> subprocess.Popen:
    if args.model is None:
        return subprocess.Popen([sys.executable, "-c", SERVER, str(args.port)], cwd=ROOT)
    serve = [sys.executable, "-m", "fashion_exp", "serve", "--model", args.model, f"serve.port={args.port}"]
    return subprocess.Popen([*serve, f"tracking.uri={args.tracking_uri}"], cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--slow-sockets", type=int, default=200, help="sockets that never end their headers")
    parser.add_argument("--model", help="serve this registered model instead of the stand-in")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="the store of --model")
    args = parser.parse_args()
    uploads = worst_uploads()
    small = io.BytesIO()
    Image.new("RGB", (400, 400), (30, 60, 200)).save(small, format="JPEG")
    server = start_server(args)
    url = f"http://127.0.0.1:{args.port}"
    stop, seen = threading.Event(), {what: {"asked": 0, "failed": 0, "slowest": 0.0} for what in ("health", "photo")}
    try:
        for _ in range(3000):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        before = peak_rss_mb(server.pid)
        helpers = [slow_sockets(args.port, args.slow_sockets, stop), probe(url, small.getvalue(), stop, seen)]
        answers = flood(url, uploads, args.clients, args.seconds)
        stop.set()
        for helper in helpers:
            helper.join(timeout=30)
        up = httpx.get(f"{url}/health", timeout=10).status_code == 200
        sizes = ", ".join(f"{name} {len(body) / 1e6:.2f} MB" for name, body in uploads.items())
        model = args.model or "stand-in"
        print(f"uploads (25, 25 and 24 MP): {sizes}; {args.slow_sockets} slow-header sockets; model: {model}")
        print(
            f"| clients | seconds | answers by status | peak RSS MB (idle {before:.0f}) | /health: slowest s, failed "
            "| photo: slowest s, failed | up after |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(answers.items(), key=str))
        health, photo = seen["health"], seen["photo"]
        print(
            f"| {args.clients} | {args.seconds:g} | {counts} | {peak_rss_mb(server.pid):.0f} | "
            f"{health['slowest']:.2f}, {health['failed']} of {health['asked']} | "
            f"{photo['slowest']:.2f}, {photo['failed']} of {photo['asked']} | {up} |"
        )
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
