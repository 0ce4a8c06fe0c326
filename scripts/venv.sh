#!/usr/bin/env bash
# Build a new virtual environment from requirements.lock: exactly the locked versions, then this
# project without dependencies, then `pip check` (a dependency pyproject.toml declares but the lock
# lacks fails here: refresh the lock with `make lock`). Usage: scripts/venv.sh PYTHON VENV
set -euo pipefail
cd "$(dirname "$0")/.."
python=$1
venv=$2
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: $python is not Python 3.10 or newer: pass PYTHON=/path/to/python3.11" >&2
    exit 1
fi
start=$(date +%s)
echo "Setting up $venv from requirements.lock with $("$python" --version) (first time: about 2 minutes with a download cache, more without)..."
rm -rf "$venv"
"$python" -m venv "$venv"
log="$venv/install.log"
if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -r requirements.lock \
        && "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --no-deps -e . \
        && "$venv/bin/python" -m pip check; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: installing into $venv failed (whole log: $log); run the same command again after fixing the cause" >&2
    mv "$venv" "$venv.failed" 2>/dev/null && rm -rf "$venv.failed"
    exit 1
fi
touch "$venv/.installed"
echo "$venv ready in $(($(date +%s) - start)) s (log: $log)"
