"""The HTTP service: good and bad requests, and the upload page in a real headless browser."""

import io
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashion_exp.children import free_port
from fashion_exp.cli import main
from fashion_exp.config import load_config
from fashion_exp.serving.app import ServeSettings, create_app
from tests.synthetic import COLORS, REAL_DATA, write_image


class ColourPredictor:
    """A stand-in model: the class whose colour is closest to the image's mean colour."""

    class_names = ["hat", "pants", "shoes"]
    image_size = 32
    interpolation = "nearest"
    name, version, run_id = "fashion-classifier", "7", "abc123"

    def predict(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        means = images.reshape(len(images), -1, 3).mean(axis=1)
        centres = np.array([COLORS[c] for c in self.class_names], dtype=np.float32)
        logits = -np.linalg.norm(means[:, None, :] - centres[None], axis=2) / 20
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def jpeg_bytes(color, size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def serve_settings(**changes) -> ServeSettings:
    """Settings for the stand-in model: one photo at a time, small limits; `changes` replace some."""
    given = dict(max_upload_bytes=50_000, max_image_pixels=200_000, top_k=3, backend="keras", max_batch=1)
    limits = {"decoders": 2, "max_waiting": 8, "read_timeout_s": 15.0, "max_requests": 64}
    limits.update(decode_budget_bytes=600e6, decode_bytes_per_value=2.0, small_share=0.1)
    return ServeSettings(**{**given, "max_wait_ms": 0.0, "request_timeout_s": 30.0, **limits, **changes})


@pytest.fixture
def client():
    return TestClient(create_app(ColourPredictor(), serve_settings()))


def test_multipart_and_raw_uploads(client):
    answer = client.post("/predict", files={"file": ("p.jpg", jpeg_bytes(COLORS["pants"]), "image/jpeg")})
    assert answer.status_code == 200
    body = answer.json()
    assert body["category"] == "pants" and [t["class"] for t in body["top"]][0] == "pants"
    assert len(body["top"]) == 3 and abs(sum(t["probability"] for t in body["top"]) - 1) < 1e-4
    assert body["model"] == {"name": "fashion-classifier", "version": "7", "backend": "keras"}
    assert body["time_ms"] >= 0
    raw = client.post("/predict", content=jpeg_bytes(COLORS["shoes"]), headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["category"] == "shoes"


def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(client):
    good = jpeg_bytes(COLORS["hat"])
    big = io.BytesIO()
    Image.new("RGB", (600, 600)).save(big, format="PNG")  # 360,000 pixels: over the 200,000 limit
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(noisy, "PNG")
    cases = [
        (dict(content=b"hello, not an image", headers={"content-type": "text/plain"}), 415, "not an image"),
        (dict(content=b"", headers={"content-type": "image/jpeg"}), 400, "empty"),
        (dict(content=good[: len(good) // 2], headers={"content-type": "image/jpeg"}), 400, "truncated"),
        (dict(content=noisy.getvalue(), headers={"content-type": "image/png"}), 413, "limit"),
        (dict(content=big.getvalue(), headers={"content-type": "image/png"}), 413, "decompression-bomb"),
        (dict(files={"other": ("x.jpg", good, "image/jpeg")}), 400, "field 'file'"),
        (dict(files={"file": ("x.txt", b"text", "text/plain")}), 415, "not an image"),
    ]
    for kwargs, status, needle in cases:
        answer = client.post("/predict", **kwargs)
        assert answer.status_code == status, (kwargs.keys(), answer.text)
        assert needle in answer.json()["error"] and answer.json()["status"] == status
    after = client.post("/predict", files={"file": ("h.jpg", good, "image/jpeg")})
    assert after.status_code == 200 and after.json()["category"] == "hat"


def test_health_version_and_page(client):
    assert client.get("/health").json() == {"status": "ok"}
    version = client.get("/version").json()
    assert version["version"] == "7" and version["class_names"] == ["hat", "pants", "shoes"]
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "/predict" in page.text


def post_in_thread(client: TestClient, photo: bytes, seconds: float = 10):
    """The answer to posting `photo`, or None when none came within `seconds` (the request hung)."""
    answers = []
    headers = {"content-type": "image/jpeg"}
    thread = threading.Thread(
        target=lambda: answers.append(client.post("/predict", content=photo, headers=headers)), daemon=True
    )
    thread.start()
    thread.join(seconds)
    return answers[0] if answers else None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread is meant to die
def test_a_dead_inference_thread_fails_health_and_requests_get_503_instead_of_hanging():
    class Exiting(ColourPredictor):
        exiting = False

        def predict(self, images, batch_size):
            if self.exiting:
                raise SystemExit("the model called exit")  # not an Exception: it ends the inference thread
            return super().predict(images, batch_size)

    predictor = Exiting()
    client = TestClient(create_app(predictor, serve_settings()))  # no lifespan: a hung request blocks no exit
    assert client.get("/health").json() == {"status": "ok"}
    predictor.exiting = True
    killed = post_in_thread(client, jpeg_bytes(COLORS["hat"]))
    assert killed is not None, "the request hung on a dead inference thread"
    assert killed.status_code == 503 and "inference thread has stopped" in killed.json()["error"]
    health = client.get("/health")
    assert health.status_code == 503, health.text
    assert "inference thread has stopped" in health.json()["error"] and "\n" not in health.json()["error"]
    later = post_in_thread(client, jpeg_bytes(COLORS["hat"]))
    assert later is not None and later.status_code == 503


def test_a_stuck_model_answers_503_after_request_timeout_s_and_serving_resumes():
    release, entered = threading.Event(), threading.Event()

    class Stuck(ColourPredictor):
        stuck = False

        def predict(self, images, batch_size):
            if self.stuck:
                entered.set()
                release.wait(10)
            return super().predict(images, batch_size)

    predictor = Stuck()
    with TestClient(create_app(predictor, serve_settings(request_timeout_s=0.3))) as client:
        predictor.stuck = True
        started = time.monotonic()
        slow = client.post("/predict", content=jpeg_bytes(COLORS["hat"]), headers={"content-type": "image/jpeg"})
        assert slow.status_code == 503 and time.monotonic() - started < 5, slow.text
        assert "no answer from the model within 0.3 s" in slow.json()["error"]
        # the batch hangs in the model: once it has run past 0.3 s, not a healthy service (on a loaded
        # machine the request could time out before the batch reached the model: wait for it there)
        assert entered.wait(5), "the batch never reached the model"
        deadline = time.monotonic() + 5
        while (health := client.get("/health")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert health.status_code == 503 and "the model has run one batch for" in health.json()["error"], health.text
        assert "past 0.3 s (serve.request_timeout_s)" in health.json()["error"]
        predictor.stuck = False
        release.set()
        again = client.post("/predict", content=jpeg_bytes(COLORS["pants"]), headers={"content-type": "image/jpeg"})
        assert again.status_code == 200 and again.json()["category"] == "pants"
        assert client.get("/health").status_code == 200


def test_every_failure_of_the_model_is_a_one_line_503_and_the_service_goes_on():
    class Failing(ColourPredictor):
        failure: BaseException | None = None

        def predict(self, images, batch_size):
            if self.failure is not None:
                raise self.failure
            return super().predict(images, batch_size)

    predictor = Failing()
    with TestClient(create_app(predictor, serve_settings())) as client:
        for failure in (MemoryError(), RuntimeError("onnxruntime: bad allocation\nmore lines")):
            predictor.failure = failure
            failed = client.post("/predict", content=jpeg_bytes(COLORS["hat"]), headers={"content-type": "image/jpeg"})
            assert failed.status_code == 503 and failed.headers["retry-after"] == "5", failed.text
            error = failed.json()["error"]
            assert (
                error.startswith(f"the model failed on this photo's batch ({type(failure).__name__}")
                and "\n" not in error
            )
            assert client.get("/health").status_code == 200
        predictor.failure = None
        again = client.post("/predict", content=jpeg_bytes(COLORS["pants"]), headers={"content-type": "image/jpeg"})
        assert again.status_code == 200 and again.json()["category"] == "pants"


@pytest.mark.slow  # a real server and 200 real sockets
def test_slow_clients_cannot_shut_the_service_out():
    """200 sockets that never finish their headers and one that trickles its body: /health and a
    real photo are answered at once all the while; the slow sockets get 408 and are closed."""
    import socket
    import urllib.request

    import uvicorn

    from fashion_exp.serving.connections import uvicorn_options

    port = free_port()
    app = create_app(ColourPredictor(), serve_settings(read_timeout_s=3.0))
    options = uvicorn_options(load_config(["serve.header_timeout_s=3"]).serve)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    slow = []
    try:
        while not server.started:
            time.sleep(0.05)
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            slow.append(sock)
        trickle = socket.create_connection(("127.0.0.1", port))
        trickle.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: image/jpeg\r\ncontent-length: 5000\r\n\r\nx"
        )
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as health:
            assert health.status == 200
        photo = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=jpeg_bytes(COLORS["pants"]), headers={"content-type": "image/jpeg"}
        )
        with urllib.request.urlopen(photo, timeout=2) as answer:
            assert json.loads(answer.read())["category"] == "pants"
        assert time.monotonic() - started < 2
        for sock in slow:  # after serve.header_timeout_s: 408, closed
            sock.settimeout(10)
            assert sock.recv(100).startswith(b"HTTP/1.1 408") and sock.recv(100) == b""
        trickle.settimeout(10)
        assert trickle.recv(200).startswith(b"HTTP/1.1 408")  # serve.read_timeout_s
    finally:
        for sock in slow:
            sock.close()
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server():
    import uvicorn

    port = free_port()
    app = create_app(ColourPredictor(), ServeSettings.from_config(load_config([])))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # a real process
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_upload_page_in_a_headless_browser(live_server, tmp_path):
    from playwright.sync_api import sync_playwright

    real = sorted((REAL_DATA / "test" / "t-shirt").glob("*.jpg"))[:1] if REAL_DATA.is_dir() else []
    photo = real[0] if real else write_image(tmp_path / "photo.jpg", COLORS["shoes"])
    import httpx

    expected = httpx.post(f"{live_server}/predict", files={"file": photo.open("rb")}).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        page.goto(live_server + "/")
        page.set_input_files("#file", str(photo))
        page.wait_for_function("document.getElementById('category').textContent.length > 0", timeout=20_000)
        assert page.text_content("#category") == expected["category"]
        rows = page.locator("tr.prediction")
        assert rows.count() == 3
        assert rows.first.locator("td").first.text_content() == expected["top"][0]["class"]
        assert page.is_visible("#preview")
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()


def test_serve_refuses_a_taken_port_and_a_missing_model(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", f"serve.port={port}"]) == 2
        assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["serve", f"serve.port={free_port()}", f"tracking.uri={uri}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no MLflow store at ") and "\n" not in err
    assert "run `python -m fashion_exp tune`" in err
    assert not (tmp_path / "mlflow.db").exists()  # serve only reads: it created no store
    assert Path(tmp_path).exists()


# ---- a flood of uploads (issue 26, item 4) ------------------------------------------------------


def image_bytes(fmt: str, size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, COLORS["hat"]).save(buffer, format=fmt)
    return buffer.getvalue()


def test_only_the_formats_browsers_upload_are_decoded_and_servings_own_pixel_limit_holds(client):
    for fmt in ("TIFF", "ICO", "PPM"):  # Pillow reads these (and EPS, through Ghostscript): serving does not
        answer = client.post("/predict", content=image_bytes(fmt), headers={"content-type": "image/x"})
        assert answer.status_code == 415, (fmt, answer.text)
        assert "not an image in a photo format (JPEG, PNG, WEBP, GIF, BMP)" in answer.json()["error"]
    for fmt in ("JPEG", "PNG", "WEBP", "GIF", "BMP"):
        assert client.post("/predict", content=image_bytes(fmt)).status_code == 200, fmt
    big = client.post("/predict", content=image_bytes("JPEG", (500, 500)))  # 250,000 pixels: over 200,000
    assert big.status_code == 413 and "(serve.max_image_pixels)" in big.json()["error"]


def test_a_large_jpeg_is_decoded_in_draft_mode_close_to_the_full_decode():
    from fashion_exp.data.images import decode_image

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((100, 100, 1), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(smooth).save(buffer, format="JPEG", quality=95)  # 4000 x 3000
    full = decode_image(buffer.getvalue(), 299, 50_000_000, "bilinear")
    draft = decode_image(buffer.getvalue(), 299, 50_000_000, "bilinear", draft=True)
    assert draft.shape == full.shape == (299, 299, 3)
    assert np.abs(draft.astype(int) - full.astype(int)).mean() < 3  # out of 255


def test_uploads_beyond_the_decoders_and_the_queue_get_503_with_retry_after(monkeypatch):
    from fashion_exp.data import images

    def slow_decode(self, data, name="upload"):
        time.sleep(1.0)
        return np.full((32, 32, 3), COLORS["hat"], np.uint8)

    monkeypatch.setattr(images.Decoder, "decode", slow_decode)
    answers = []
    settings = serve_settings(decoders=1, max_waiting=1, decode_budget_bytes=9600)  # one 40x40 photo: all of it
    with TestClient(create_app(ColourPredictor(), settings)) as client:

        def post():
            answers.append(client.post("/predict", content=jpeg_bytes(COLORS["hat"])))

        threads = [threading.Thread(target=post) for _ in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)  # in order: one decodes, one waits, two are turned away
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(a.status_code for a in answers) == [200, 200, 503, 503]
        busy = [a for a in answers if a.status_code == 503]
        assert all(a.headers["retry-after"] == "1" and "serve.max_waiting" in a.json()["error"] for a in busy)
        assert client.post("/predict", content=jpeg_bytes(COLORS["hat"])).status_code == 200  # and it goes on


@pytest.mark.slow  # a real server and a real socket
def test_a_slow_upload_gets_408_and_holds_no_connection():
    import uvicorn

    port = free_port()
    app = create_app(ColourPredictor(), serve_settings(read_timeout_s=1.0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100)
            started = time.monotonic()
            answer = b""
            while b"read_timeout_s" not in answer and (chunk := slow.recv(4096)):  # the rest never comes
                answer += chunk
            answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and "serve.read_timeout_s" in answer
        assert time.monotonic() - started < 5
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_auto_serves_the_fastest_backend_that_holds_on_this_cpu():
    """serve.backend=auto reads what export-onnx measured: bf16 only when it passed the gate (or,
    exported before the gate, was exact) and this CPU has BF16 units, int8 only when it held
    accuracy, the faster of what is left; exports made before speeds were logged keep the old order
    (int8, then fp32)."""
    from fashion_exp.final.onnx_export import BF16_EXACT, BF16_HOLDS, INT8_ARTIFACT, INT8_HOLDS, ONNX_ARTIFACT
    from fashion_exp.hardware import Cpu
    from fashion_exp.serving.backends import pick_backend

    files = [ONNX_ARTIFACT, INT8_ARTIFACT]
    speeds = {"onnx_images_per_s": 10.0, "onnx_int8_images_per_s": 25.0, "onnx_bf16_images_per_s": 21.0}
    bf16_cpu, avx2 = Cpu(frozenset({"avx2", "avx512_bf16"})), Cpu(frozenset({"avx2"}))
    holds = {INT8_HOLDS: "true", BF16_EXACT: "false", BF16_HOLDS: "true"}  # (the champion's: 2 of 341 changed)
    assert pick_backend(files, holds, speeds, bf16_cpu)[0] == "onnx-int8"
    backend, why = pick_backend(files, {**holds, INT8_HOLDS: "false"}, speeds, bf16_cpu)
    assert backend == "openvino-bf16"
    assert why.startswith("auto: bf16 kept validation accuracy") and "openvino-bf16 21.0" in why
    old = {INT8_HOLDS: "false", BF16_EXACT: "true"}  # an export from before the gate: exact still serves
    assert pick_backend(files, old, speeds, bf16_cpu)[0] == "openvino-bf16"
    failed = {INT8_HOLDS: "false", BF16_EXACT: "false", BF16_HOLDS: "false"}
    assert pick_backend(files, failed, speeds, bf16_cpu)[0] == "onnx"
    assert pick_backend(files, {**holds, INT8_HOLDS: "false"}, speeds, avx2)[0] == "onnx"  # no BF16 units here
    assert pick_backend(files, {INT8_HOLDS: "false", BF16_EXACT: "false"}, speeds, bf16_cpu)[0] == "onnx"
    assert pick_backend(files, holds, {**speeds, "onnx_int8_images_per_s": 8.0}, avx2)[0] == "onnx"  # int8 slower
    assert pick_backend(files, {INT8_HOLDS: "true"}, {}, avx2)[0] == "onnx-int8"  # an export without speeds
    assert pick_backend([], holds, speeds, bf16_cpu)[0] == "keras"


def test_decoding_is_bounded_by_memory_not_by_cores_and_small_photos_pass_large_ones():
    """serve.decode_budget_mb: uploads decode while their cost (header pixels x bands x
    decode_bytes_per_value) fits; a tenth is kept for small photos; one over the budget alone."""
    import asyncio

    from fashion_exp.serving.memory import DecodeBudget

    async def scenario():
        budget, log, active = DecodeBudget(100, 0.1), [], []

        async def upload(name: str, cost: float, seconds: float):
            async with budget.holding(cost):
                active.append(name)
                log.append(sorted(active))
                await asyncio.sleep(seconds)
                active.remove(name)

        big = [upload(f"big{i}", 40, 0.2) for i in range(3)]  # 40 > a tenth: two fit in 90, the third waits
        await asyncio.gather(*big, upload("small", 5, 0.01), upload("huge", 500, 0.01))
        return log

    log = asyncio.run(scenario())
    assert max(sum(n.startswith("big") for n in names) for names in log) == 2
    assert ["big0", "big1", "small"] in log  # the small photo did not wait behind the large ones
    assert ["huge"] in log and not any("huge" in names and len(names) > 1 for names in log)  # alone


SERVER = """
import sys, numpy as np, uvicorn
from fashion_exp.config import load_config
from fashion_exp.serving.app import ServeSettings, create_app
from fashion_exp.serving.connections import uvicorn_options
class StandIn:
    class_names, image_size, interpolation = ["a", "b", "c"], 299, "nearest"
    name, version, run_id = "stand-in", "1", None
    def predict(self, images, batch_size):
        return np.full((len(images), 3), 1 / 3, np.float32)
config = load_config(sys.argv[2:])
uvicorn.run(create_app(StandIn(), ServeSettings.from_config(config)), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="error", **uvicorn_options(config.serve))
"""


@pytest.mark.slow  # a real server process, 40 uploads of 25 MP and 200 slow sockets
def test_forty_25_mp_uploads_and_200_slow_sockets_keep_memory_bounded_and_health_answering(tmp_path):
    """As if the container saw 8 cores (serve.decoders=8: before the budget, 8 decodes of 600 MB at
    once): the server's peak memory stays under 1.5 GB, /health and a small photo are answered
    within 2 s all the while."""
    import socket
    import subprocess
    import sys

    import httpx

    rgba = io.BytesIO()
    Image.new("RGBA", (5000, 5000), (200, 40, 40, 128)).save(rgba, format="PNG")  # ~100 KB, 100 MB decoded
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), "serve.decoders=8"])
    url, slow = f"http://127.0.0.1:{port}", []
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        for _ in range(200):
            slow.append(socket.create_connection(("127.0.0.1", port)))
            slow[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        answers = []

        def upload():
            with httpx.Client(timeout=120) as session:
                answers.append(session.post(f"{url}/predict", content=rgba.getvalue()).status_code)

        uploads = [threading.Thread(target=upload) for _ in range(40)]
        for thread in uploads:
            thread.start()
        slowest = 0.0
        while any(thread.is_alive() for thread in uploads):
            started = time.monotonic()
            assert httpx.get(f"{url}/health", timeout=2).status_code == 200
            photo = httpx.post(f"{url}/predict", content=jpeg_bytes(COLORS["hat"], (400, 400)), timeout=2)
            assert photo.status_code == 200, photo.text
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.2)
        for thread in uploads:
            thread.join()
        assert set(answers) <= {200, 503} and answers.count(200) >= 8, answers  # (503: more than max_waiting wait)
        peak = next(
            int(line.split()[1])
            for line in Path(f"/proc/{server.pid}/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
        assert peak < 1.5 * 2**20, f"peak RSS {peak / 2**20:.2f} GB"
        print(f"peak RSS {peak / 2**20:.2f} GB, slowest /health + photo {slowest:.2f} s, answers {answers}")
    finally:
        for sock in slow:
            sock.close()
        server.terminate()
        server.wait(timeout=30)
