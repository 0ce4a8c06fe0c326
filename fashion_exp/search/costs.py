"""What tune's work costs on this machine, for the plan it prints before it starts.

The plan starts from a table by kind of host (finetune_stage.prior_rates: Xception, 2 CPU cores;
benchmarks/bench_hardware.py and bench_finetune.py measure the same rates on any machine) and
replaces each rate by what this machine measured the last time it did that kind of work:
extraction on the search's runtime and through fine-tuning cuts, a frozen-head trial, a
fine-tuning trial (block14's, and each deeper cut's once one ran: block13's 19x19 maps made an
epoch of two blocks 2.9 times block14's here, not the 1.5 times more_blocks assumes). The
measurements are kept in work_dir/rates/<CPU flags>.json, so a later plan starts from them. A plan
is an estimate: the time budget, not the plan, stops the work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from fashion_exp import writers
from fashion_exp.config import PRIOR_RATES

REFERENCE_SIZE = 299
MEASURED = ("extract_per_s", "cut_extract_per_s", "head_ms_per_row", "finetune_ms_per_image")
DEEPER = re.compile(r"finetune_ms_per_image_blocks(\d+)$")  # an epoch of that many blocks, measured (2 and up)


def finetune_key(blocks: int) -> str:
    """The rate book's name for an epoch of `blocks` trained blocks (block14's alone: finetune_ms_per_image)."""
    return "finetune_ms_per_image" if blocks <= 1 else f"finetune_ms_per_image_blocks{blocks}"


@dataclass(frozen=True)
class Rates:
    host: str  # what kind of machine these were measured on
    extract_per_s: float  # images per second through the frozen backbone at 299px, on the search's runtime
    head_ms_per_row: float  # one frozen-head epoch, per cached training row (dense layers and a trial's overhead)
    finetune_ms_per_image: float  # one epoch of training block14 at 299px, per training photo
    cut_extract_per_s: float = 0.0  # ... through a fine-tuning cut, on its runtime (fp32 or bf16); 0: as above
    deeper: tuple[tuple[int, float], ...] = ()  # (blocks >= 2, ms per photo of its epoch at 299px) where measured
    measured: tuple[str, ...] = ()  # which of MEASURED this machine measured (the rest are the table's)

    def extraction_seconds(self, images: int, size: int, cut: bool = False) -> float:
        rate = self.cut_extract_per_s if cut and self.cut_extract_per_s else self.extract_per_s
        return images / rate * _pixels(size)

    def head_seconds(self, rows: int, epochs: int) -> float:
        return rows * epochs * self.head_ms_per_row / 1000

    def finetune_seconds(self, images: int, epochs: int, blocks: int, size: int) -> float:
        per_image = dict(self.deeper).get(blocks) or self.finetune_ms_per_image * more_blocks(blocks)
        return images * epochs * per_image / 1000 * _pixels(size)

    def source(self) -> str:
        """Where the rates come from, in words, for the plan's first line."""
        if not self.measured:
            return f"costs for a {self.host}"
        names = ", ".join(name.replace("_", " ") for name in self.measured)
        return f"costs measured on this machine ({names}), the rest for a {self.host}"


def more_blocks(blocks: int) -> float:
    """A fine-tuning epoch's cost relative to block14's alone, before this machine measured it: block13
    adds about half (bench_finetune.py's training steps; a trial's validation on the larger maps adds more)."""
    return 1 + 0.5 * (max(blocks, 1) - 1)


def _pixels(size: int) -> float:
    return (size / REFERENCE_SIZE) ** 2


def prior(table: dict[str, dict], backbone: str, gpus: int) -> Rates:
    """The row of finetune_stage.prior_rates that describes this machine for `backbone`."""
    row = table[host_kind(backbone, gpus)]
    return Rates(str(row.get("host", host_kind(backbone, gpus))), *(float(row[name]) for name in PRIOR_RATES))


def host_kind(backbone: str, gpus: int) -> str:
    """Which kind of host (finetune_stage.prior_rates' rows) this machine is for `backbone`."""
    if backbone == "tiny":
        return "tiny"
    if gpus:
        return "gpu"
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return "avx512" if " avx512f" in flags else "avx2"


class RateBook:
    """This machine's measured rates, kept in work_dir/rates/<machine>.json (machine: the backbone,
    and the CPU's flags or the GPU: rates measured on another kind of machine do not apply)."""

    def __init__(self, work_dir: Path | str, machine: str):
        self.path = Path(work_dir) / "rates" / f"{machine}.json"

    def read(self) -> dict[str, float]:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet, or damaged: the table's rates until measured again
            return {}
        if not isinstance(saved, dict):
            return {}
        return {k: float(v) for k, v in saved.items() if _known(k) and isinstance(v, int | float) and v > 0}

    def note(self, **rates: float) -> None:
        """Keep these measured rates (positive ones), replacing what was measured before."""
        kept = {**self.read(), **{k: float(v) for k, v in rates.items() if _known(k) and v and v > 0}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = writers.temporary(self.path)
        partial.write_text(json.dumps(kept, indent=1))
        partial.replace(self.path)

    def rates(self, table: Rates) -> Rates:
        """The table's rates with every one this machine measured in their place."""
        measured = self.read()
        known = {field.name for field in fields(Rates)}
        deeper = tuple(sorted((int(DEEPER.match(k)[1]), v) for k, v in measured.items() if DEEPER.match(k)))
        named = {k: v for k, v in measured.items() if k in known}
        return replace(table, **named, deeper=deeper, measured=tuple(measured))


def _known(name: str) -> bool:
    return name in MEASURED or DEEPER.match(name) is not None


def extraction_rate(images: int, seconds: float, size: int, least: int = 32) -> float:
    """Images a second at 299px from `images` extracted in `seconds` at `size` (0: fewer than `least`,
    too few to tell from a stage's cached leftovers)."""
    return images / seconds / _pixels(size) if images >= least and seconds > 0 else 0.0
