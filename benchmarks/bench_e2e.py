"""Per-question latency of the whole pipeline, split by stage, for DyTo vs SlowFast vs concat.

Stages (ms, median over questions): decode (video decode + "resize" preprocessing of the real
``bikes.mp4`` clip, as the data side does), encode (CLIP + projector), reduce (the reducer),
prefill (the first forward pass of ``generate``) and generate (the remaining decoding steps).
Every question decodes exactly ``--max-new-tokens`` tokens (``min_new_tokens`` is set too), so
random weights stopping early at EOS cannot bias the comparison.

Models:
* default: the tiny RANDOM-WEIGHT LLaVA-NeXT, on CPU, at ``--image-size 336`` so each frame has
  the real 24x24 = 576 patch tokens and the reducers handle the real token counts (3680 tokens
  for DyTo and SlowFast); only the widths and depths are tiny.
* ``--full-size-random``: LLaVA-NeXT-7B at its real config (CLIP ViT-L/14-336 + Llama-7B),
  RANDOM WEIGHTS, nothing downloaded; fp16 on CUDA when available. ``--num-layers N`` keeps the
  real widths with N layers per tower (a CPU smoke test of the full-size shapes).

Reducers: ``dyto`` = DyToReducer() (100 frames, budget 3680); ``slowfast`` = SlowFastReducer()
(50 frames, 10x288 + 50x16 = 3680 tokens, the baseline of the ratios); ``concat-6`` =
ConcatReducer(num_frames=6): 6x576 = 3456 tokens. Concat at 50 or 100 frames (28,800 / 57,600
tokens) exceeds the 8192-token limit and would be marked too_long.

    python benchmarks/bench_e2e.py [--questions 5] [--max-new-tokens 32] [--full-size-random]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

from dyto import api
from dyto.models.llava_next import DyToVideoQA
from dyto.models.rope import apply_rope_scaling
from dyto.models.tiny import build_tiny_llava_next, build_tiny_tokenizer
from dyto.reduction import ConcatReducer, DyToReducer, SlowFastReducer

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "videos" / "bikes.mp4"
STAGES = ("decode", "encode", "reduce", "prefill", "generate")
QUESTIONS = [
    "What are the people in the video doing?", "Where does the video take place?",
    "How many bikes can be seen?", "What happens at the end of the video?",
    "Describe the weather in the video.", "What colour are the bikes?",
    "Is anyone wearing a helmet?", "What is in the background?",
]


def full_size_random(device: str, dtype: torch.dtype, num_layers: int | None):
    """LLaVA-NeXT-7B's real config (llava-hf/llava-v1.6-vicuna-7b-hf) with RANDOM WEIGHTS."""
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=num_layers or 24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                              hidden_act="quick_gelu")
    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=num_layers or 32, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, rms_norm_eps=1e-5)
    apply_rope_scaling(text, 2.0)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=32000,
                             vision_feature_layer=-2, vision_feature_select_strategy="default",
                             image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
                             image_seq_length=576)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = LlavaNextForConditionalGeneration(config).eval()
        finally:
            torch.set_default_dtype(previous)
    # The tiny tokenizer's ids (< 400) are valid rows of the 32064-token embedding.
    return model, build_tiny_tokenizer(), "llava-next-7b-config (random weights)"


def ask(module: DyToVideoQA, q: int) -> dict:
    """Decode the clip and answer question `q` as a batch of one (the benchmark runs' own decode,
    preprocess and predict_step path, via `dyto.api.ask`); the prediction record."""
    record = api.ask(module, VIDEO, QUESTIONS[q % len(QUESTIONS)])
    if record["status"] != "ok":
        raise RuntimeError(f"{record['reducer']['name']}: {record['status']}: {record['error']}")
    return record


def run(modules: dict[str, DyToVideoQA], questions: int) -> dict[str, dict]:
    """Median stage timings (ms) per reducer over `questions` questions, after one warm-up.

    Reducers take turns question by question, so background load hits all of them alike.
    """
    records: dict[str, list[dict]] = {name: [] for name in modules}
    for q in range(questions + 1):
        for name, module in modules.items():
            record = ask(module, q)
            if q:  # question 0 warms up kernels and caches
                records[name].append(record)
    out = {}
    for name, recs in records.items():
        last = recs[-1]
        out[name] = {s: statistics.median(r["timings"][s] for r in recs) for s in STAGES}
        out[name].update(frames=last["frames_sampled"], kept=len(last["frames_kept"]),
                         tokens=last["visual_tokens_out"], prompt=last["prompt_tokens"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=336, help="tiny model only")
    parser.add_argument("--full-size-random", action="store_true")
    parser.add_argument("--num-layers", type=int, default=None, help="full-size widths with fewer layers")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    if args.full_size_random:
        backbone = full_size_random(device, dtype, args.num_layers)
    else:
        model, tokenizer = build_tiny_llava_next(image_size=args.image_size, rope_scaling_factor=2.0)
        backbone = (model.to(device=device, dtype=dtype), tokenizer, "tiny-random-llava-next (random weights)")
    reducers = {"dyto": DyToReducer(), "slowfast": SlowFastReducer(), "concat-6": ConcatReducer(num_frames=6)}
    modules = {}
    for name, reducer in reducers.items():
        module = DyToVideoQA(model="tiny", reducer=reducer, max_new_tokens=args.max_new_tokens)
        module.attach_backbone(*backbone)
        module.generation_config.min_new_tokens = args.max_new_tokens
        modules[name] = module.to(device)
    results = run(modules, args.questions)

    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model: {backbone[2]}; device: {gpu}; {dtype}; image {module.image_size}px; "
          f"{args.max_new_tokens} new tokens; median of {args.questions} questions (ms)")
    header = ["reducer", "frames", "kept", "tokens", "prompt", *STAGES, "total", "model", "total/sf", "model/sf"]
    print(" | ".join(f"{h:>9}" for h in header))
    base = results["slowfast"]
    for name, r in results.items():
        total = sum(r[s] for s in STAGES)
        model_side = total - r["decode"]  # decoding runs in DataLoader workers, overlapped with the model
        base_total = sum(base[s] for s in STAGES)
        cells = [name, r["frames"], r["kept"], r["tokens"], r["prompt"], *(f"{r[s]:.1f}" for s in STAGES),
                 f"{total:.1f}", f"{model_side:.1f}", f"{total / base_total:.2f}",
                 f"{model_side / (base_total - base['decode']):.2f}"]
        print(" | ".join(f"{c:>9}" for c in cells))


if __name__ == "__main__":
    main()
