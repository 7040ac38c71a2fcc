#!/usr/bin/env bash
# Create .venv and install dyto with its dev extras. Idempotent: reinstalls only when
# pyproject.toml changed. torch goes in first (CPU build here) so that pip never resolves an
# open torch range by itself, which can pull a multi-GB CUDA build.
#   DYTO_TORCH="torch==2.13.0"  override the torch requirement (e.g. a CUDA build on a GPU box)
#   DYTO_VENV=.venv             where the virtual environment lives
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DYTO_VENV:-.venv}"
TORCH_REQ="${DYTO_TORCH:-torch==2.13.0}"
PY="${PYTHON:-python3}"
stamp="$VENV/.dyto-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $TORCH_REQ"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_REQ" >&2
  "$VENV/bin/python" -m pip install -q "$TORCH_REQ" 2>&1 | grep -v "^WARNING: Location" >&2 || {
    echo "[setup] $TORCH_REQ not available; trying plain torch" >&2
    "$VENV/bin/python" -m pip install -q torch; }
fi
echo "[setup] installing dyto[dev] (editable)" >&2
"$VENV/bin/python" -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/python" -c "import dyto, torch, lightning, transformers" 
echo "$want" > "$stamp"
