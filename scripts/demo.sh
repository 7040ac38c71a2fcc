#!/usr/bin/env bash
# The built-in offline demo: the tiny TRAINED LLaVA-NeXT on the 20 questions of the shipped synthetic
# clips (dyto/assets/synthetic_demo), first with every token of every frame (outputs/demo_unreduced),
# then through DyTo at the paper's share of the tokens (outputs/demo), then the two side by side with
# paired tests (outputs/demo_compare/comparison.md). Extra arguments go to both `dyto predict` runs
# (e.g. --data.limit 4; not --output.*: the two runs need their own folders, which the comparison reads).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
dyto="${DYTO_VENV:-.venv}/bin/dyto"
"$dyto" predict --config configs/demo.yaml --output.run_name demo_unreduced \
        --model.reducer dyto.reduction.ConcatReducer --model.reducer.init_args.num_frames 100 "$@"
"$dyto" predict --config configs/demo.yaml "$@"
exec "$dyto" compare outputs/demo_unreduced outputs/demo --out outputs/demo_compare
