#!/usr/bin/env bash
# Run the whole test suite (sets itself up first). Extra arguments go to pytest.
#   DYTO_TEST_WORKERS=N  pytest-xdist worker processes (default: the CPU count, at most 4; 0 = in this process)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
cpus=$(nproc 2>/dev/null || echo 1)
workers="${DYTO_TEST_WORKERS:-$(( cpus < 4 ? cpus : 4 ))}"
exec "${DYTO_VENV:-.venv}/bin/python" -m pytest -q -ra -n "$workers" "$@"
