"""Micro-batching in the service: concurrent photos share a forward pass, each gets its own answer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fashion_exp.serving.app import ServeSettings, create_app
from fashion_exp.serving.batcher import BatcherStopped, MicroBatcher, padded_size
from tests.synthetic import COLORS
from tests.test_serve import ColourPredictor, jpeg_bytes


class SlowRecorder:
    """predict = the images' mean pixel, after a pause (a forward pass); records each batch's shape."""

    def __init__(self, seconds: float = 0.05):
        self.shapes: list[int] = []
        self.seconds = seconds
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with self.lock:
            self.shapes.append(len(images))
        threading.Event().wait(self.seconds)
        return images.reshape(len(images), -1).mean(axis=1, keepdims=True)


def images(n: int) -> list[np.ndarray]:
    return [np.full((4, 4, 3), i, np.uint8) for i in range(n)]


def test_concurrent_images_share_batches_and_each_gets_its_own_row():
    model = SlowRecorder()
    batcher = MicroBatcher(model, max_batch=8, max_wait_ms=20)
    try:
        futures = [batcher.submit(image) for image in images(20)]
        rows = [float(f.result(timeout=10)[0]) for f in futures]
    finally:
        batcher.close()
    assert rows == [float(i) for i in range(20)]  # every caller its own image's answer, in order
    assert sum(batcher.batches) == 20 and max(batcher.batches) == 8 and len(batcher.batches) < 20
    assert set(model.shapes) <= {1, 2, 4, 8}  # padded to powers of two: few traced shapes


def test_max_batch_1_classifies_one_photo_at_a_time():
    model = SlowRecorder(0.0)
    batcher = MicroBatcher(model, max_batch=1, max_wait_ms=20)
    try:
        assert [float(f.result(timeout=10)[0]) for f in [batcher.submit(i) for i in images(5)]] == [0, 1, 2, 3, 4]
    finally:
        batcher.close()
    assert model.shapes == [1] * 5


def test_a_failing_forward_pass_fails_its_callers_and_the_next_batch_runs():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)

    batcher = MicroBatcher(flaky, max_batch=4, max_wait_ms=0)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            batcher.submit(images(1)[0]).result(timeout=10)
        assert float(batcher.submit(images(3)[2]).result(timeout=10)[0]) == 2.0
    finally:
        batcher.close()


def test_warm_up_runs_every_batch_shape_once():
    model = SlowRecorder(0.0)
    batcher = MicroBatcher(model, max_batch=12, max_wait_ms=0)
    batcher.warm_up((4, 4, 3))
    batcher.close()
    assert model.shapes == [1, 2, 4, 8, 12]


def test_padded_sizes():
    assert [padded_size(n, 16) for n in (1, 2, 3, 5, 9, 16)] == [1, 2, 4, 8, 16, 16]
    assert padded_size(12, 12) == 12


def test_sixteen_clients_at_once_get_their_own_answers_in_shared_batches():
    class Counting(ColourPredictor):
        shapes: list[int] = []

        def predict(self, images, batch_size):
            self.shapes.append(len(images))
            threading.Event().wait(0.05)
            return super().predict(images, batch_size)

    predictor = Counting()
    settings = ServeSettings(
        50_000,
        200_000,
        3,
        "keras",
        16,
        10,
        30,
        decoders=2,
        max_waiting=32,
        read_timeout_s=15,
        max_requests=64,
        decode_budget_bytes=600e6,
        decode_bytes_per_value=2.0,
        small_share=0.1,
    )
    colours = ["hat", "pants", "shoes"] * 6
    with TestClient(create_app(predictor, settings)) as client, ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda c: client.post(
                    "/predict", content=jpeg_bytes(COLORS[c]), headers={"content-type": "image/jpeg"}
                ),
                colours,
            )
        )
    assert [a.json()["category"] for a in answers] == colours
    assert len(predictor.shapes) < len(colours)  # some photos shared a forward pass


def test_images_that_cannot_be_stacked_fail_their_batch_and_the_next_batch_runs():
    batcher = MicroBatcher(SlowRecorder(0.0), max_batch=2, max_wait_ms=300)
    try:
        odd = [batcher.submit(np.zeros((4, 4, 3), np.uint8)), batcher.submit(np.zeros((5, 5, 3), np.uint8))]
        for future in odd:
            with pytest.raises(ValueError, match="same shape"):
                future.result(timeout=5)
        assert float(batcher.submit(images(3)[2]).result(timeout=5)[0]) == 2.0
    finally:
        batcher.close()


def test_a_cancelled_request_is_skipped_and_the_thread_keeps_serving():
    entered, release = threading.Event(), threading.Event()

    def gated(batch):
        entered.set()
        release.wait(5)
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)

    batcher = MicroBatcher(gated, max_batch=4, max_wait_ms=0)
    try:
        first = batcher.submit(images(1)[0])
        assert entered.wait(5)  # the thread is busy with `first`: the next request waits in the queue
        gone = batcher.submit(images(2)[1])
        assert gone.cancel()  # its caller gave up (a timeout, a closed connection)
        release.set()
        assert float(first.result(timeout=5)[0]) == 0.0
        assert float(batcher.submit(images(3)[2]).result(timeout=5)[0]) == 2.0
        assert batcher.alive
    finally:
        batcher.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread is meant to die
def test_a_dead_thread_fails_waiting_and_new_requests_instead_of_hanging():
    def fatal(batch):
        raise SystemExit("the model called exit")  # not an Exception: it ends the thread

    batcher = MicroBatcher(fatal, max_batch=4, max_wait_ms=0)
    with pytest.raises(BatcherStopped, match="inference thread has stopped"):
        batcher.submit(images(1)[0]).result(timeout=5)
    batcher.close()
    assert not batcher.alive
    with pytest.raises(BatcherStopped, match="inference thread has stopped"):
        batcher.submit(images(1)[0]).result(timeout=5)
