"""What a run costs the machine: MLflow's system metrics while a block runs, and this process's memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SYSTEM_METRICS_SECONDS = 10  # how often CPU, memory, disk, network (and GPU) use is sampled


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux; 0 where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


@contextmanager
def system_metrics(uri: str, run_id: str | None) -> Iterator[None]:
    """MLflow's system metrics (system/cpu_utilization_percentage, system/system_memory_usage_megabytes,
    ... and system/gpu_* where a GPU is seen) on `run_id` while the block runs; nothing for None."""
    if run_id is None:
        yield
        return
    import logging

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no "started monitoring" lines
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=SYSTEM_METRICS_SECONDS, resume_logging=True, tracking_uri=uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
