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
UV=uv==0.13.9
start=$(date +%s)
echo "Setting up $venv from requirements.lock with $("$python" --version) (first time: under a minute with uv, about 2 with pip alone)..."
rm -rf "$venv"
"$python" -m venv "$venv"
log="$venv/install.log"
pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input)
# uv (pinned) installs the lock in about 40 s where pip takes about 2 minutes (2-core host, 2026-12-07),
# both compiling the bytecode (without it every process that imports TensorFlow took 15 s, not 7);
# pip does it alone where uv cannot be had or cannot install it (an index that only pip.conf names).
# uv reads no pip.conf: the index pip is set to use (PIP_INDEX_URL, or pip.conf's), if any, is uv's too.
index=${PIP_INDEX_URL:-$("${pip[@]}" config get global.index-url 2>/dev/null || true)}
uv=("$venv/bin/uv" pip install --python "$venv/bin/python" ${index:+--index-url "$index"})
exec 3>&2  # (the terminal, for the one line that says pip takes over)
install() {
    if "${pip[@]}" install "$UV" && "${uv[@]}" --compile-bytecode -r requirements.lock; then
        "${uv[@]}" --no-deps -e . && "$venv/bin/uv" pip check --python "$venv/bin/python"
    else
        echo "uv did not install the lock: pip does (about 2 minutes)" | tee /dev/fd/3
        "${pip[@]}" install -r requirements.lock && "${pip[@]}" install --no-deps -e . && "${pip[@]}" check
    fi
}
if ! install >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: installing into $venv failed (whole log: $log); run the same command again after fixing the cause" >&2
    mv "$venv" "$venv.failed" 2>/dev/null && rm -rf "$venv.failed"
    exit 1
fi
touch "$venv/.installed"
echo "$venv ready in $(($(date +%s) - start)) s (log: $log)"
