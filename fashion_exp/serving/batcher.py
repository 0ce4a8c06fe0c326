"""Micro-batching: images that arrive together are classified in one forward pass.

One inference thread takes the oldest waiting image, waits at most `max_wait_ms` for more (up to
`max_batch` in all), runs the model once on the batch, and hands each caller its row. A lone
request waits only `max_wait_ms` more than it would alone; under load, the per-image cost falls
to a batch's. max_batch=1 serialises requests one at a time (the service before batching).

A failing batch (a forward pass that raises, images that cannot be stacked) fails only its callers;
a caller that gave up (a cancelled future) is skipped. Should the thread end all the same (a
BaseException such as SystemExit from the model), every waiting and later caller gets BatcherStopped
at once, and `alive` turns false for /health.
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


class BatcherStopped(RuntimeError):
    """The inference thread has ended: no request will be classified until the service restarts."""


class MicroBatcher:
    """Runs `predict` (uint8 images (n, s, s, 3) -> probabilities (n, classes)) on batches of
    concurrently submitted images, in one background thread."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float):
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: queue.Queue = queue.Queue()
        self.batches: list[int] = []  # sizes of the last batches run (for /health and tests)
        self._stopped = False  # set, under _lock, by the thread as it ends; submit checks it
        self._end = "closed at shutdown"  # why the thread ended, for the one-line error
        self._lock = threading.Lock()
        self.running_since: float | None = None  # time.monotonic() when the batch in the model began (None: idle)
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the inference thread still takes requests."""
        return self._thread.is_alive() and not self._stopped

    def stuck_for(self, limit: float) -> float | None:
        """Seconds the batch in the model has run, when more than `limit` (a model that may hang), else None."""
        began = self.running_since
        running = time.monotonic() - began if began is not None else 0.0
        return running if running > limit else None

    @property
    def why_stopped(self) -> str:
        """One line for callers and /health once the thread has ended."""
        return f"the inference thread has stopped ({self._end}); restart the service"

    def submit(self, image: np.ndarray) -> Future:
        """A future for `image`'s probabilities; it fails with BatcherStopped if the thread has ended."""
        future: Future = Future()
        with self._lock:  # against the thread ending between the check and the put
            if self._stopped:
                future.set_exception(BatcherStopped(self.why_stopped))
            else:
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
        batch: list | None = None
        try:
            while (batch := self._collect()) is not None:
                self._run(batch)
        except BaseException as err:  # SystemExit and the like end the thread: say which, then let it end
            self._end = f"it raised {type(err).__name__}"
            raise
        finally:  # fail whoever waits rather than leave them hanging
            with self._lock:
                self._stopped = True
            for _, future in [*(batch or []), *self._drain()]:
                if not future.done():
                    future.set_exception(BatcherStopped(self.why_stopped))

    def _run(self, items: list) -> None:
        """Classify one batch and answer its callers; every Exception fails the batch's callers only."""
        try:
            # a caller that gave up is skipped; the rest are marked running, so they can no longer be cancelled
            live = [(image, future) for image, future in items if future.set_running_or_notify_cancel()]
            if not live:
                return
            images = np.stack([image for image, _ in live])
            shape = padded_size(len(images), self.max_batch)
            self.running_since = time.monotonic()
            try:
                probabilities = np.asarray(self._predict(pad_batch(images, shape)))[: len(images)]
            finally:
                self.running_since = None
            self.batches = [*self.batches[-99:], len(live)]
            for row, (_, future) in zip(probabilities, live, strict=True):
                future.set_result(row)
        except Exception as err:  # noqa: BLE001 - every caller hears of the failure
            for _, future in items:
                if not future.done():
                    future.set_exception(err)

    def _drain(self) -> list:
        """The requests still queued (the close marker dropped)."""
        items = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return items
            if item is not None:
                items.append(item)
