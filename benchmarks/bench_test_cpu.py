"""Where the test suite's CPU goes: runs pytest with the given words, and every Python process it
starts (pytest's workers, `python -m fashion_exp` commands, `mlflow server`, MLflow's own helper
processes) writes its CPU time at exit; prints the CPU seconds and the count by kind of process.

Each process writes its first four command-line words and its CPU time to a log in a private
temporary folder, deleted at the end; the words are redacted before they are printed or written
to --out. A process killed with SIGKILL writes nothing (the kill -9 tests' victims are left out). Compare
kinds within one run, or runs on one host. It is how docs/results.md found MLflow's job runner and
requirement inference in the suite.

    python benchmarks/bench_test_cpu.py -- -n 0 tests/test_signals.py    # minutes: what pytest takes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from fashion_exp.redact import redact_words

RECORDER = """
import atexit, json, os, resource, sys, time

_started = time.time()


def _record():
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        row = {"argv": sys.argv[:4], "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.time() - _started}
        row["test"] = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]  # (pytest sets it; children inherit it)
        with open(os.environ["BENCH_CPU_LOG"], "a") as log:
            log.write(json.dumps(row) + "\\n")
    except Exception:
        pass


atexit.register(_record)
"""

KINDS = (  # (what the command line holds, the kind), first match wins
    ("huey_consumer", "MLflow's job runner (huey_consumer)"),
    ("_capture_modules", "MLflow's requirement inference (_capture_modules)"),
    ("fashion_exp/tracking/server.py", "the MLflow server's guard and group leader"),
    ("mlflow/__main__.py server", "mlflow server"),
)


def kind_of(argv: list[str]) -> str:
    line = " ".join(argv)
    for text, kind in KINDS:
        if text in line:
            return kind
    if argv and argv[0].endswith("fashion_exp/__main__.py"):
        return f"python -m fashion_exp {argv[1] if len(argv) > 1 else ''}".strip()
    if argv and (argv[0] == "-c" or "pytest" in argv[0]):
        return "pytest, its workers and the tests' launchers (-c)"
    return "other: " + Path(argv[0]).name if argv else "other"


def by_test(rows: list[dict], most: int) -> None:
    """The tests whose child processes took the most CPU (a test's own process, pytest's worker, is
    shared by every test it runs: not counted here)."""
    children: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.get("test") and kind_of(row["argv"]) != "pytest, its workers and the tests' launchers (-c)":
            children[row["test"]].append(row["cpu_s"])
    if not children:
        return
    print(f"\n{'test (its child processes)':<100} {'count':>6} {'CPU s':>8}")
    for test, values in sorted(children.items(), key=lambda item: -sum(item[1]))[:most]:
        print(f"{test[:100]:<100} {len(values):>6} {sum(values):>8.1f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pytest_words", nargs="*", help="words for pytest, after --")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--tests", type=int, default=15, help="how many tests to list by their child processes' CPU")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-test-cpu-") as tmp:
        Path(tmp, "sitecustomize.py").write_text(RECORDER)
        log = Path(tmp, "processes.jsonl")
        env = {**os.environ, "BENCH_CPU_LOG": str(log)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))
        started = time.monotonic()
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_words]
        done = subprocess.run(pytest, env=env)
        wall = time.monotonic() - started
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for row in rows:  # (a command line may carry a tracking URI's password; --out keeps none)
        row["argv"] = redact_words(row["argv"])
    by_kind: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_kind[kind_of(row["argv"])].append(row["cpu_s"])
    total = sum(sum(values) for values in by_kind.values())
    print(f"\npytest exited {done.returncode} after {wall:.0f} s; {len(rows)} processes, {total:.0f} s of CPU")
    print(f"{'kind of process':<55} {'count':>6} {'CPU s':>8} {'share':>6}")
    for kind, values in sorted(by_kind.items(), key=lambda item: -sum(item[1])):
        print(f"{kind:<55} {len(values):>6} {sum(values):>8.1f} {sum(values) / max(total, 1e-9):>6.0%}")
    by_test(rows, args.tests)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"wall_s": wall, "rows": rows}, indent=1))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
