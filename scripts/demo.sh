#!/usr/bin/env bash
# Run the built-in offline demo: the tiny random-weight LLaVA-NeXT + DyTo on a real clip.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${DYTO_VENV:-.venv}/bin/dyto" predict --config configs/demo.yaml "$@"
