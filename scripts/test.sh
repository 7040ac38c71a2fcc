#!/usr/bin/env bash
# Run the whole test suite (sets itself up first). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
exec "${DYTO_VENV:-.venv}/bin/python" -m pytest -q -ra "$@"
