"""Micro-batching: images that arrive together are classified in one forward pass.

One inference thread takes the oldest waiting image, waits at most `max_wait_ms` for more (up to
`max_batch` in all), runs the model once on the batch, and hands each caller its row. A lone
request waits only `max_wait_ms` more than it would alone; under load, the per-image cost falls
to a batch's. max_batch=1 serialises requests one at a time (the service before batching).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from fashion_exp.batching import pad_batch


def padded_size(n: int, most: int) -> int:
    """The batch shape n images run as: the next power of two (at most `most`), so a traced model
    sees a handful of shapes instead of one per batch size."""
    size = 1
    while size < n:
        size *= 2
    return min(size, most) if n <= most else n


class MicroBatcher:
    """Runs `predict` (uint8 images (n, s, s, 3) -> probabilities (n, classes)) on batches of
    concurrently submitted images, in one background thread."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float):
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # sizes of the last batches run (for /health and tests)
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray) -> Future:
        """A future for `image`'s probabilities."""
        future: Future = Future()
        self._queue.put((image, future))
        return future

    def warm_up(self, image_shape: tuple[int, ...]) -> None:
        """Run each batch shape once before requests come: a Keras model traces a graph per new
        shape (seconds at 299px), which would otherwise land on the first burst of clients."""
        size = 1
        while True:
            self._predict(np.zeros((size, *image_shape), np.uint8))
            if size >= self.max_batch:
                return
            size = min(size * 2, self.max_batch)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _collect(self) -> list | None:
        first = self._queue.get()
        if first is None:
            return None
        items = [first]
        deadline = time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(left, 0)) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # close after this batch
                break
            items.append(item)
        return items

    def _loop(self) -> None:
        while (items := self._collect()) is not None:
            images = np.stack([image for image, _ in items])
            try:
                shape = padded_size(len(images), self.max_batch)
                probabilities = np.asarray(self._predict(pad_batch(images, shape)))[: len(images)]
            except Exception as err:  # noqa: BLE001 - every caller hears of the failure
                for _, future in items:
                    future.set_exception(err)
                continue
            self.batches = [*self.batches[-99:], len(items)]
            for row, (_, future) in zip(probabilities, items, strict=True):
                future.set_result(row)
