"""Stop signals as exceptions that never land inside a store write.

SIGTERM (how Slurm, systemd, Docker and Kubernetes stop a job) raises Terminated and Ctrl-C raises
KeyboardInterrupt, as Python's own Ctrl-C does, with one difference: inside a `deferred()` block
(every MLflow client call runs in one) the signal is only noted, and raised as the block ends. An
exception raised in the middle of a database write left the SQLite transaction open, so marking the
runs KILLED then failed with "database is locked" (the stop ended in a traceback, exit 1).
"""

from __future__ import annotations

import _thread
import functools
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be: what a run stopped by Ctrl-C is
    marked (KILLED) and cleans up (workers told to stop, locks let go), one stopped by SIGTERM is too."""


_depth = 0  # deferred() blocks open in the main thread (signal handlers run there only)
_pending: type[KeyboardInterrupt] | None = None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _stop(error: type[KeyboardInterrupt], frame=None) -> None:
    global _pending
    if _depth:
        _pending = _pending or error
        return
    if _inside_redeliver(frame):  # (raised here it would be discarded for good: deliver it once more)
        _deliver_later(error)
        return
    raise error()


def _on_sigterm(signum, frame) -> None:
    _stop(Terminated, frame)


def _on_sigint(signum, frame) -> None:
    _stop(KeyboardInterrupt, frame)


def _redeliver(unraisable, hook=sys.unraisablehook) -> None:
    """sys.unraisablehook: a stop raised where Python discards exceptions is delivered again, from
    another thread so that the handler runs anew in ordinary code (interrupt_main from this thread
    would run it here, inside the hook, where it is discarded again); other errors go to `hook`."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _deliver_later(type(unraisable.exc_value))
        return
    hook(unraisable)


def _deliver_later(error: type[KeyboardInterrupt]) -> None:
    """The stop's signal again in a moment, from another thread. On a loaded machine it can land
    before this thread has left _redeliver (Timer.start waits for its thread), where _stop sends it
    once more instead of raising it into the hook (Python discards that, and the stop was lost)."""
    number = signal.SIGTERM if issubclass(error, Terminated) else signal.SIGINT
    threading.Timer(0.01, _thread.interrupt_main, (number,)).start()


def _inside_redeliver(frame) -> bool:
    while frame is not None:
        if frame.f_code is _redeliver.__code__:
            return True
        frame = frame.f_back
    return False


@contextmanager
def as_interrupts() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises Terminated and Ctrl-C KeyboardInterrupt
    (outside deferred blocks, never lost); the previous handlers are put back after."""
    if not _in_main_thread():
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigint)
    hook, sys.unraisablehook = sys.unraisablehook, functools.partial(_redeliver, hook=sys.unraisablehook)
    try:
        yield
    finally:
        sys.unraisablehook = hook
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def deferred() -> Iterator[None]:
    """A stop signal that arrives inside the block is raised as the block ends (at once if the
    block is not in the main thread's care: other threads are never interrupted)."""
    global _depth, _pending
    if not _in_main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            error, _pending = _pending, None
            raise error()


class DeferringClient:
    """An MLflow client whose every method call runs in a deferred() block: a stop signal never
    interrupts a store write halfway."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._client, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args, **kwargs):
            with deferred():
                return value(*args, **kwargs)

        return call
