"""What a job tells its user, line by line: each module says its lines (say) to one logger,
"fashion_exp", and the command line shows them on stdout above the progress bars (show). Used as
a library, a job prints nothing unless its caller adds a handler to screen.LOGGER; tests read the
lines with the `said` fixture (tests/conftest.py). Not a parameter threaded through every step
(issue 37, item 1)."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

LOGGER = logging.getLogger("fashion_exp")
# Shown by show() alone: a library that configures the root logger (MLflow's server, uvicorn) neither
# prints these lines a second time nor prints them where nothing asked for them.
LOGGER.propagate = False


def say(line: str) -> None:
    """Tell the user `line` (one line of what the job did or is about to do)."""
    LOGGER.info(line)


class _AboveBars(logging.Handler):
    """Writes each line with tqdm.write: above a running progress bar, not through it."""

    def emit(self, record: logging.LogRecord) -> None:
        handling = sys.exc_info()[1]  # (a line said while a stop is being handled: that stop is not new)
        try:
            tqdm.write(self.format(record))
        except Exception as err:  # noqa: BLE001 - logging's rule: a line that cannot be written never stops the job
            stop = interrupt_behind(err, handling)
            if stop is not None:
                raise stop from None
            self.handleError(record)


def interrupt_behind(err: BaseException, handling: BaseException | None = None) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM (fashion_exp/signals.py) that `err` was raised while handling, if any,
    up to `handling` (what the caller was already handling when it wrote: not a new stop).
    tqdm.write's cleanup hides one that lands inside it: a stop in its lock's first creation made its
    `finally` raise AttributeError (no tqdm._lock), which logging's rule swallowed, so `ui` served
    on after Ctrl-C and a search ran on."""
    seen = set()
    while err is not None and err is not handling and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def show() -> None:
    """Print the lines said in this process on stdout (the command line calls it once)."""
    if not any(isinstance(handler, _AboveBars) for handler in LOGGER.handlers):
        LOGGER.addHandler(_AboveBars())
    LOGGER.setLevel(logging.INFO)
