"""What one start of an MLflow server costs: `mlflow server --workers 1` (its command line, then
uvicorn as a child) against fashion_exp's store_server (one process), each on an empty sqlite store
and on one that exists, alternating, --repeats times. For each start: the seconds until /health
answers, until a run is created and read back through it (the store is opened by then), and the
CPU seconds of the server's processes at that point. A minute on 2 cores.

    python benchmarks/bench_store_server.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fashion_exp.children import free_port

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of_tree(pid: int) -> float:
    """CPU seconds of pid and its living descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            todo += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def command(kind: str, port: int, root: str) -> list[str]:
    if kind == "mlflow server":
        return [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--default-artifact-root", root]  # fmt: skip
    return [sys.executable, "-m", "fashion_exp.tracking.store_server", "--host", "127.0.0.1", "--port", str(port),
            "--artifact-root", root]  # fmt: skip


def one_start(kind: str, store: Path, folder: Path) -> tuple[float, float, float]:
    """(seconds to /health, seconds to a run created and read, CPU seconds by then)."""
    from mlflow.tracking import MlflowClient

    port, began = free_port(), time.monotonic()
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{store}",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    server = subprocess.Popen(command(kind, port, (folder / "mlruns").as_uri()), env=env, cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        health = time.monotonic() - began
        client = MlflowClient(url)
        run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
        client.get_run(run.info.run_id)
        return health, time.monotonic() - began, cpu_of_tree(server.pid)
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for kind in ("mlflow server", "store_server"):
                store = Path(folder) / f"{kind.replace(' ', '-')}-{repeat}.db"
                for state in ("empty store", "existing store"):  # the first start makes the store
                    rows.setdefault((kind, state), []).append(one_start(kind, store, Path(folder)))
    print(
        f"{'server':<15} {'store':<15} {'to /health s':>13} {'to a run s':>11} {'CPU s':>7}",
        f"  (median of {args.repeats})",
    )
    for (kind, state), found in rows.items():
        health, run, cpu = (statistics.median(column) for column in zip(*found, strict=True))
        print(f"{kind:<15} {state:<15} {health:>13.2f} {run:>11.2f} {cpu:>7.2f}")


if __name__ == "__main__":
    main()
