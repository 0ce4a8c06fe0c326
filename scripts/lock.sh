#!/usr/bin/env bash
# Refresh requirements.lock, the exact versions that `make tune` and `make test` install.
# It resolves pyproject.toml's dependencies (with the dev and postgres extras) from the registry
# in a new, empty virtual environment, so nothing installed by hand can slip into the lock.
# After it: `make test` (it rebuilds .venv from the new lock) must pass before the lock is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
echo "resolving pyproject.toml's dependencies in a new environment ($("$python" --version))..."
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check ".[dev,postgres]"
{
    echo "# Exact versions for Linux x86_64, $("$python" --version). Made by scripts/lock.sh: do not edit by hand."
    "$tmp/venv/bin/python" -m pip freeze --exclude fashion_exp --exclude fashion-exp
} >requirements.lock.new
mv requirements.lock.new requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages); now run: make test"
