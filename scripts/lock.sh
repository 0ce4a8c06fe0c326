#!/usr/bin/env bash
# Refresh requirements.lock, the exact versions that `make tune` and `make test` install.
# It resolves pyproject.toml's dependencies (with the dev and postgres extras) from the registry
# in a new, empty virtual environment, so nothing installed by hand can slip into the lock.
# Every package the lock already holds keeps its version (the lock constrains the resolve): only
# what pyproject.toml adds is resolved anew. `scripts/lock.sh --upgrade` re-resolves everything.
# After it: `make test` (it rebuilds .venv from the new lock) must pass before the lock is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
constraints=()
if [ "${1:-}" = --upgrade ]; then
    echo "re-resolving every package (--upgrade)"
elif [ -n "${1:-}" ]; then
    echo "usage: scripts/lock.sh [--upgrade]" >&2
    exit 2
elif [ -f requirements.lock ]; then
    constraints=(-c requirements.lock)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
echo "resolving pyproject.toml's dependencies in a new environment ($("$python" --version))..."
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${constraints[@]}" ".[dev,postgres]"
{
    echo "# Exact versions for Linux x86_64, $("$python" --version). Made by scripts/lock.sh: do not edit by hand."
    "$tmp/venv/bin/python" -m pip freeze --exclude fashion_exp --exclude fashion-exp
} >requirements.lock.new
mv requirements.lock.new requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages); now run: make test"
