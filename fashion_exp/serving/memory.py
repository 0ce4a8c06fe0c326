"""How much memory decoding uploads may hold at once (serve.decode_budget_mb).

Decoding a photo holds its full pixels however small the model's input: a 110 KB RGBA PNG of 25 MP
is 100 MB once decoded. Bounding decodes by a count of threads let memory grow with the machine's
cores (a container sees the host's). Here an upload is admitted to decoding when its cost, read
from its header (width x height x bands x serve.decode_bytes_per_value), fits what the budget has
left; an upload costing more than the whole budget decodes alone. Small photos are never stuck
behind large ones: an upload costing more than a tenth of the budget may use nine tenths of it,
so a tenth always stays for the small ones.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from contextlib import asynccontextmanager


class DecodeBudget:
    """Bytes of decoding in flight, at most `budget` (one larger upload alone); `small` of it is kept
    for uploads costing at most that share (serve.small_share)."""

    def __init__(self, budget: float, small: float):
        self.budget = budget
        self.small_share = small
        self.used = 0.0
        self._room = asyncio.Condition()

    def small(self, cost: float) -> bool:
        """Whether an upload of `cost` may use the tenth kept for small photos."""
        return cost <= self.small_share * self.budget

    def _fits(self, cost: float) -> bool:
        if self.used == 0:
            return True  # (one upload larger than the whole budget decodes alone)
        limit = self.budget if self.small(cost) else (1 - self.small_share) * self.budget
        return self.used + cost <= limit

    @asynccontextmanager
    async def holding(self, cost: float):
        """Wait until `cost` bytes fit, hold them for the block."""
        async with self._room:
            await self._room.wait_for(lambda: self._fits(cost))
            self.used += cost
        try:
            yield
        finally:
            async with self._room:
                self.used -= cost
                self._room.notify_all()


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def give_back_freed_memory() -> None:
    """Return freed heap pages to the system (glibc's malloc_trim; elsewhere nothing): the decoder
    threads' malloc arenas otherwise keep a large decode's pages, and the service's memory would
    grow past the budget by what each thread once held."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
