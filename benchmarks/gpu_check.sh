#!/usr/bin/env bash
# The throughput work's GPU check, one script for one lent GPU (H200: each step capped so the
# whole stays under 9 minutes). docs/throughput.md, "The GPU check", says how to carry the wheels.
#   0. installs the wheels in .whl/ (transformers 5.24.0, decord 0.6.0) into a target folder
#   1. bench_throughput.py, LLaVA-NeXT-7B (random weights, fp16): 16 demo questions pooled and
#      decoded in the graphed loop, 128 new tokens, per-stage account against the bounds (the
#      reducer's per-question times and an in-situ profile of it), batch-1 token rate for eager,
#      static_compiled and graphed against the weight-bandwidth bound, a profile of one graphed step
#   2. the same for Qwen2.5-VL-7B (bf16)
#   3. profile_reduce.py: DyTo's reduce stage alone at the 7B shapes, per dtype, with its top kernels
#   By name only (STEPS=...; they passed on the H200 of 2026-12-04): vision_tower
#   (check_vision_tower.py: Qwen2.5-VL's batched tower against the model's own) and encode_ahead
#   (check_encode_ahead_cuda.py --new-tokens 64).
# Logs: benchmarks/results/gpu_check_<date>/<step>.log, .jsonl (copied to $OUT when it is set).
#
#   bash benchmarks/gpu_check.sh                                  # on the GPU machine, carry: [".whl"]
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --dry-run # CPU: every step at tiny sizes, logs in /tmp
#   STEPS="throughput_qwen2_5_vl" bash benchmarks/gpu_check.sh     # only the named steps (a rerun of one)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
if (( DRY )); then DIR=${TMPDIR:-/tmp}/gpu_check_dryrun; else DIR=benchmarks/results/gpu_check_$(date +%Y-%m-%d); fi
mkdir -p "$DIR"
OUTDIR=  # on the lent machine, every log is written under $OUT as it grows, so a cut-off run still returns it
if [[ -n "${OUT:-}" ]]; then OUTDIR=$OUT/$(basename "$DIR"); mkdir -p "$OUTDIR"; fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 WANDB_MODE=disabled
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" > /dev/null; then
  SITE=${DYTO_SITE:-${TMPDIR:-/tmp}/dyto-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH=$SITE:$PYTHONPATH
fi
"$PY" - <<'PYEOF' 2>&1 | tee "$DIR/environment.log" ${OUTDIR:+"$OUTDIR/environment.log"}
import importlib, platform, torch
versions = {m: getattr(importlib.import_module(m), "__version__", "?") for m in ("torch", "transformers", "lightning")}
for m in ("decord", "av"):
    try:
        versions[m] = importlib.import_module(m).__version__
    except ImportError:
        versions[m] = "absent"
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}; {versions}; GPU: {gpu}")
PYEOF

SUMMARY=()
step() {  # step NAME SECONDS COMMAND...: run with a time cap, log, note the exit status
  local name=$1 cap=$2; shift 2
  if [[ -n "${STEPS:-}" && " $STEPS " != *" $name "* ]]; then return; fi
  local t0=$SECONDS
  echo "== $name: $*" | tee "$DIR/$name.log" ${OUTDIR:+"$OUTDIR/$name.log"}
  timeout "$cap" "$@" 2>&1 | tee -a "$DIR/$name.log" ${OUTDIR:+"$OUTDIR/$name.log"}
  local rc=${PIPESTATUS[0]}
  SUMMARY+=("$name: exit $rc in $((SECONDS - t0)) s (cap $cap s)")
}

if (( DRY )); then
  step vision_tower 300 "$PY" benchmarks/check_vision_tower.py --depth 1 --frames 2 --videos 1 --side 112 \
       --partial 56x140 --repeats 1
  for b in llava_next qwen2_5_vl; do
    step "throughput_$b" 300 "$PY" benchmarks/bench_throughput.py --backbone "$b" --threads 1 --questions 2 \
         --pool 2 --max-new-tokens 4 --today-questions 1 --token-questions 1 --profile --json "$DIR/throughput.jsonl"
  done
  step encode_ahead 1500 "$PY" benchmarks/check_encode_ahead_cuda.py --num-layers 1 --new-tokens 4
  step profile_reduce 300 "$PY" benchmarks/profile_reduce.py --shapes qwen2_5_vl_7b --dtypes bfloat16 --repeats 1 --top 3
else
  only() { [[ " ${STEPS:-} " == *" $1 "* ]]; }  # steps that run when named only
  only vision_tower && step vision_tower 60 "$PY" benchmarks/check_vision_tower.py --repeats 2
  for b in llava_next qwen2_5_vl; do  # 152 s and 166 s on the H200 with one batch-1 compiled loop; now two
    step "throughput_$b" 250 "$PY" benchmarks/bench_throughput.py --full-size-random --size 7b --backbone "$b" \
         --questions 16 --pool 16 --max-new-tokens 128 --today-questions 3 --token-questions 2 --profile \
         --json "$DIR/throughput.jsonl"
  done
  only encode_ahead && step encode_ahead 50 "$PY" benchmarks/check_encode_ahead_cuda.py --new-tokens 64
  step profile_reduce 40 "$PY" benchmarks/profile_reduce.py --repeats 5
fi
printf '%s\n' "${SUMMARY[@]}" | tee "$DIR/summary.log" ${OUTDIR:+"$OUTDIR/summary.log"}
if [[ -n "$OUTDIR" ]]; then cp "$DIR"/*.jsonl "$OUTDIR/" 2>/dev/null; fi
