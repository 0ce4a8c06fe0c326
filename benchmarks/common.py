"""What the benchmarks share: where the real dataset and Xception weights are."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def real_data_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with --data and --weights (FASHION_DATA / FASHION_WEIGHTS, else ../shared)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("FASHION_DATA", SHARED / "data/clothing-dataset-small"))
    parser.add_argument(
        "--weights", default=os.environ.get("FASHION_WEIGHTS", SHARED / "weights/xception_notop.weights.h5")
    )
    return parser
