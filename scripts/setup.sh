#!/usr/bin/env bash
# Create .venv and install dyto with its dev extras. Idempotent: reinstalls only when
# pyproject.toml or the torch requirement changed. torch goes in first (a CPU build here) so
# that pip never resolves an open torch range by itself, which can pull a multi-GB CUDA build.
#   DYTO_TORCH="torch==2.13.0"  the torch requirement (e.g. a CUDA build on a GPU machine)
#   DYTO_VENV=.venv             where the virtual environment lives
#   PYTHON=python3              the interpreter that creates it
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DYTO_VENV:-.venv}"
TORCH_REQ="${DYTO_TORCH:-torch==2.13.0}"
stamp="$VENV/.dyto-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $TORCH_REQ"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
log="$VENV/install.log"
: > "$log"
pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" >>"$log" 2>&1
}
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_REQ" >&2
  # never fall back to a bare `torch`: an open range can pull a multi-GB CUDA build
  pip_install "$TORCH_REQ" || { echo "[setup] $TORCH_REQ is not available here; set DYTO_TORCH to a torch" \
                                     "requirement this machine can install (e.g. DYTO_TORCH='torch==2.9.1')" >&2
                                tail -30 "$log" >&2; exit 1; }
fi
echo "[setup] installing dyto[dev] (editable) into $VENV" >&2
pip_install -e '.[dev]' || { echo "[setup] install failed; the end of $log:" >&2; tail -30 "$log" >&2; exit 1; }
"$VENV/bin/python" -c "import dyto, torch, lightning, transformers"
echo "$want" > "$stamp"
