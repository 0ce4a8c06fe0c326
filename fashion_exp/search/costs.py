"""What tune's work costs on this machine, for the plan it prints before it starts.

Measured rates by kind of host (Xception, fp32, 2 CPU cores; the benchmarks/ scripts measure them
again on any machine): a plan is an estimate, and the time budget, not the plan, stops the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REFERENCE_SIZE = 299


@dataclass(frozen=True)
class Rates:
    host: str  # what kind of machine these were measured on
    extract_per_s: float  # images per second through the frozen backbone at 299px
    head_ms_per_row: float  # one frozen-head epoch, per cached training row (dense layers only)
    finetune_ms_per_image: float  # one epoch of training block14 at 299px, per training photo

    def extraction_seconds(self, images: int, size: int) -> float:
        return images / self.extract_per_s * _pixels(size)

    def head_seconds(self, rows: int, epochs: int) -> float:
        return rows * epochs * self.head_ms_per_row / 1000

    def finetune_seconds(self, images: int, epochs: int, blocks: int, size: int) -> float:
        more_blocks = 1 + 0.5 * (blocks - 1)  # block13 adds about half of block14's cost (bench_finetune.py)
        return images * epochs * self.finetune_ms_per_image / 1000 * _pixels(size) * more_blocks


def _pixels(size: int) -> float:
    return (size / REFERENCE_SIZE) ** 2


RATES = {
    # benchmarks/bench_extraction.py and bench_finetune.py on the project's hosts:
    # Xception at 299: 5-9 img/s; a block14 epoch over 3,068 photos at 299: 48 s (Zen 4) and 90-120 s (AVX2)
    "avx512": Rates("CPU with AVX-512 (2 cores)", 8.0, 0.25, 48_000 / 3068),
    "avx2": Rates("CPU with AVX2 only (2 cores)", 6.0, 0.35, 100_000 / 3068),
    # not measured by this project yet (benchmarks/bench_preset.py measures it where a GPU is present):
    # an H100/H200-class GPU runs Xception at several hundred images a second
    "gpu": Rates("GPU (estimate)", 400.0, 0.05, 1_000 / 3068),
    # the unit tests' tiny backbone: a 2-layer convolution
    "tiny": Rates("tiny test backbone", 5_000.0, 0.05, 0.5),
}


def host_kind(backbone: str, gpus: int) -> str:
    """Which RATES row describes this machine for `backbone`."""
    if backbone == "tiny":
        return "tiny"
    if gpus:
        return "gpu"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512" if " avx512f" in flags else "avx2"
