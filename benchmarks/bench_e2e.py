"""Per-question latency of the whole pipeline, split by stage, for DyTo vs SlowFast vs concat.

Stages (ms, median over questions): decode (video decode + "resize" preprocessing of the real
``bikes.mp4`` demo clip, by the data side's own dataset code), encode (CLIP + projector; with
``encode_ahead`` the time the question waited for features encoded during the previous step),
reduce (the reducer), prefill (the first forward pass of ``generate``) and generate (the
remaining decoding steps). ``model`` is the wall time of ``predict_step`` with every CUDA stream
synchronised at its end, so work done ahead for the next question counts unless it really ran
under this question's generation; decoding is left out of it because DataLoader workers overlap
it with the model. Every question decodes exactly ``--max-new-tokens`` tokens (``min_new_tokens``
is set too), so random weights stopping early at EOS cannot bias the comparison.

Questions arrive as a stream: the next one is decoded before the current one is answered and
announced to it as ``batch["upcoming"]``, as the DataModule's LookaheadDataLoader does.
``--encode-ahead both`` (default) runs every reducer without and with ``encode_ahead``
(``name+ahead``); the ``+ahead`` rows also report how many answers equal the plain ones.

Models:
* default: the tiny RANDOM-WEIGHT LLaVA-NeXT, on CPU, at ``--image-size 336`` so each frame has
  the real 24x24 = 576 patch tokens and the reducers handle the real token counts (3680 tokens
  for DyTo and SlowFast); only the widths and depths are tiny. On CPU nothing overlaps.
* ``--full-size-random [--size 7b|34b]``: LLaVA-NeXT at its real config (CLIP ViT-L/14-336 +
  Vicuna-7B or Yi-34B), RANDOM WEIGHTS, nothing downloaded; fp16 on CUDA. ``--num-layers N``
  keeps the real widths with N layers per tower (a CPU smoke test of the full-size shapes).

Backbones (``--backbone``, default llava_next): any registered family. ``llava_onevision`` and
``internvl`` run their tiny RANDOM-WEIGHT models at the real input size by default (384 px ->
14x14 = 196 tokens per frame; 448 px -> 16x16 = 256), or with ``--full-size-random`` at the real
LLaVA-OneVision-7B (SigLIP so400m + Qwen2-7B) / InternVL3-8B (InternViT-300M + Qwen2.5-7B)
configs with random weights. DyTo's budget scales with the grid: round(3680 x N / 576) per
100 frames (1252 on 14x14, 1636 on 16x16), as in configs/reducers/dyto_<family>.yaml.
``qwen3_vl``: the tiny model at 96 px, or with ``--full-size-random`` Qwen3-VL-8B's config at
480 px (15x15 per temporal patch, DyTo 719), bfloat16 on CUDA.

Reducers: ``dyto`` = DyToReducer() (100 frames, budget 3680); ``slowfast`` = SlowFastReducer()
(50 frames, 10x288 + 50x16 = 3680 tokens, the baseline of the ratios); ``concat-6`` =
ConcatReducer(num_frames=6): 6x576 = 3456 tokens. Concat at 50 or 100 frames (28,800 / 57,600
tokens) exceeds the 8192-token limit and would be marked too_long.

    python benchmarks/bench_e2e.py [--questions 5] [--max-new-tokens 32 128] [--repeats 2]
    python benchmarks/bench_e2e.py --full-size-random --size 7b --reducers dyto slowfast \
        --max-new-tokens 128 32 --json e2e.jsonl          # on a GPU; results/ holds H100 logs
    python benchmarks/bench_e2e.py --backbone llava_onevision [--full-size-random] --encode-ahead off

Whole methods (``--whole-methods fastv dycoke prunevid holitom``) add one configuration each,
built from ``configs/reducers/<name>_full.yaml``: the outer reducer and its inner-LLM stage
(dyto.models.inner), answered by dyto's inner loop; on LLaVA-NeXT (576 tokens a frame) FastV's
concat takes 6 frames and the others at most 16, as their 32 frames pass max_length. ``--prune-layer K`` moves every stage's first pruned layer to
K (a model cut to ``--num-layers`` has fewer layers than the papers' K, M and L).

    python benchmarks/bench_e2e.py --full-size-random --backbone qwen2_5_vl --reducers slowfast \
        --whole-methods fastv dycoke prunevid holitom --encode-ahead off --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
)
from transformers import logging as hf_logging

from dyto import api
from dyto.datamodules.base import UpcomingBatch
from dyto.models.backbone import BACKBONES, list_backbones
from dyto.models.llava_next import DyToVideoQA
from dyto.models.rope import apply_rope_scaling
from dyto.models.videoqa import VideoQA
from dyto.models.tiny import build_tiny_llava_next, build_tiny_tokenizer, random_weight_model
from dyto.records import QARecord
from dyto.reduction import ConcatReducer, DyToReducer, SlowFastReducer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "reducers"
WHOLE_METHODS = ("fastv", "dycoke", "prunevid", "holitom")

VIDEO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo" / "bikes.mp4"
STAGES = ("decode", "encode", "reduce", "prefill", "generate")
REDUCERS = {"dyto": DyToReducer, "slowfast": SlowFastReducer, "concat-6": lambda: ConcatReducer(num_frames=6)}
QUESTIONS = [
    "What are the people in the video doing?", "Where does the video take place?",
    "How many bikes can be seen?", "What happens at the end of the video?",
    "Describe the weather in the video.", "What colour are the bikes?",
    "Is anyone wearing a helmet?", "What is in the background?",
]


# The real configs of the two released checkpoints (text tower; both use CLIP ViT-L/14-336).
TEXT_CONFIGS = {
    "7b": dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, image_token_index=32000,
               name="llava-hf/llava-v1.6-vicuna-7b-hf"),
    "34b": dict(vocab_size=64064, hidden_size=7168, intermediate_size=20480, num_hidden_layers=60,
                num_attention_heads=56, num_key_value_heads=8, rope_theta=5_000_000.0, image_token_index=64000,
                name="llava-hf/llava-v1.6-34b-hf"),
}


def full_size_random(size: str, device: str, dtype: torch.dtype, num_layers: int | None):
    """LLaVA-NeXT-7B or -34B at its real config with RANDOM WEIGHTS (nothing is downloaded)."""
    text_args = dict(TEXT_CONFIGS[size])
    name, image_token_index = text_args.pop("name"), text_args.pop("image_token_index")
    if num_layers:
        text_args["num_hidden_layers"] = num_layers
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=num_layers or 24,
                              num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                              hidden_act="quick_gelu")
    text = LlamaConfig(max_position_embeddings=4096, rms_norm_eps=1e-5, **text_args)
    apply_rope_scaling(text, 2.0)
    config = LlavaNextConfig(vision_config=vision, text_config=text, image_token_index=image_token_index,
                             vision_feature_layer=-2, vision_feature_select_strategy="default",
                             image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
                             image_seq_length=576)
    model = random_weight_model(LlavaNextForConditionalGeneration, config, device, dtype)
    # The tiny tokenizer's ids (< 400) are valid rows of either embedding table.
    return model, build_tiny_tokenizer(), f"{name} config (random weights)"


# Real configs of the other families (random weights; the tiny chat tokenizer's ids are valid rows).
QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1_000_000.0,
                rms_norm_eps=1e-6)


def full_size_family(family: str, device: str, dtype: torch.dtype, num_layers: int | None):
    """(model, tokenizer, name): LLaVA-OneVision-7B or InternVL3-8B at the real config, RANDOM WEIGHTS."""
    from transformers import (InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig,
                              LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config,
                              SiglipVisionConfig)

    from dyto.models.tiny_families import (INTERNVL_CHAT_TEMPLATE, ONEVISION_CHAT_TEMPLATE,
                                           build_chat_tokenizer)

    text_args = dict(QWEN2_7B)
    if num_layers:
        text_args["num_hidden_layers"] = num_layers
    if family == "llava_onevision":
        tokenizer = build_chat_tokenizer(["<image>", "<video>"], ONEVISION_CHAT_TEMPLATE)
        vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=num_layers or 26,
                                    num_attention_heads=16, image_size=384, patch_size=14, vision_use_head=False)
        config = LlavaOnevisionConfig(vision_config=vision, text_config=Qwen2Config(**text_args),
                                      image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
                                      video_token_index=tokenizer.convert_tokens_to_ids("<video>"))
        cls, name = LlavaOnevisionForConditionalGeneration, "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    elif family == "internvl":
        tokenizer = build_chat_tokenizer(["<img>", "</img>", "<IMG_CONTEXT>", "<video>"], INTERNVL_CHAT_TEMPLATE)
        text_args["vocab_size"] = 151674
        vision = InternVLVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=num_layers or 24,
                                      num_attention_heads=16, image_size=[448, 448], patch_size=[14, 14])
        config = InternVLConfig(vision_config=vision, text_config=Qwen2Config(**text_args),
                                image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
        cls, name = InternVLForConditionalGeneration, "OpenGVLab/InternVL3-8B-hf"
    else:
        raise SystemExit(f"--full-size-random has no config for backbone {family!r}")
    model = random_weight_model(cls, config, device, dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer, f"{name} config (random weights)"


def family_reducers(n: int, frames_per_patch: int = 1) -> dict:
    """The reducers at a grid of ``n`` tokens per frame: DyTo's budget at 3680's share of the native count."""
    budget = round(3680 * n / 576 / frames_per_patch)
    return {"dyto": lambda: DyToReducer(budget=budget), "slowfast": SlowFastReducer,
            "concat-6": lambda: ConcatReducer(num_frames=6)}


def whole_method(name: str, backbone: str, prune_layer: int | None):
    """(reducer, inner stage) of ``configs/reducers/<name>_full.yaml``, the stage moved to ``prune_layer``."""
    import importlib

    import yaml

    model = yaml.safe_load((CONFIGS / f"{name}_full.yaml").read_text())["model"]

    def build(spec, **override):
        module, _, cls = spec["class_path"].rpartition(".")
        return getattr(importlib.import_module(module), cls)(**{**spec.get("init_args", {}), **override})

    frames = {}
    if backbone == "llava_next":  # 576 tokens a frame: the 32-frame configs pass max_length (8192)
        frames = {"num_frames": 6 if name == "fastv" else min(16, model["reducer"]["init_args"]["num_frames"])}
    reducer = build(model["reducer"], **frames)
    stage = build(model["inner_stage"])
    if prune_layer is not None:
        stage = build(model["inner_stage"], layer=prune_layer - (stage.prune_layer - stage.layer))
    return reducer, stage


def sample(module: DyToVideoQA, q: int) -> dict:
    """Question `q` on the clip as a batch of one, decoded and preprocessed by the data side's own
    dataset code (timed into ``decode_ms``); frames pinned on CUDA, as the DataModule does."""
    record = QARecord(id=f"q{q}", benchmark="adhoc", task="open_ended", video=str(VIDEO),
                      question=QUESTIONS[q % len(QUESTIONS)], answer="", split="test")
    batch = api.question_batch(module, record)
    if module.device.type == "cuda":
        batch["pixel_values"] = [batch["pixel_values"][0].pin_memory()]
    return batch


def run(modules: dict[str, DyToVideoQA], questions: int) -> dict[str, dict]:
    """Median stage timings and ``predict_step`` wall time (ms) per configuration over
    `questions` questions, after one warm-up question.

    Each configuration sees the questions as a stream, the next one decoded before the current
    one is answered (as DataLoader workers run ahead) and announced to it as ``upcoming``, which
    only configurations with ``encode_ahead`` use. Configurations take turns question by
    question, so background load hits all of them alike.
    """
    records: dict[str, list[dict]] = {name: [] for name in modules}
    pending: dict[str, dict] = {}
    for q in range(questions + 1):
        for name, module in modules.items():
            current = pending.pop(name, None) or sample(module, q)
            pending[name] = following = sample(module, q + 1)
            if module.encodes_ahead:
                current["upcoming"] = UpcomingBatch(following)
            t0 = time.perf_counter()
            (record,) = module.predict_step(current, q)
            if module.device.type == "cuda":
                # all streams: the next question's encode-ahead counts in this step unless it
                # really ran under this step's generation
                torch.cuda.synchronize()
            record["timings"]["step"] = (time.perf_counter() - t0) * 1e3
            if record["status"] != "ok":
                raise RuntimeError(f"{name}: {record['status']}: {record['error']}")
            if q:  # question 0 warms up kernels and caches
                records[name].append(record)
    out = {}
    for name, recs in records.items():
        last = recs[-1]
        out[name] = {s: statistics.median(r["timings"][s] for r in recs) for s in (*STAGES, "step")}
        out[name].update(frames=last["frames_sampled"], kept=len(last["frames_kept"]),
                         tokens=last["visual_tokens_out"], prompt=last["prompt_tokens"],
                         tflops=statistics.median(r["prefill_tflops"] for r in recs))
        plain = records.get(name.removesuffix("+ahead"))
        if name.endswith("+ahead") and plain:  # encode_ahead must not change a single answer
            out[name]["same_answers"] = sum(a["prediction"] == b["prediction"] for a, b in zip(recs, plain))
    return out


def table(results: dict[str, dict], title: str) -> str:
    """The printed comparison. ``model`` is the wall time of ``predict_step`` (everything but
    decoding, which DataLoader workers overlap with the model); ratios are against SlowFast."""
    header = ["config", "frames", "kept", "tokens", "prompt", *STAGES, "model", "model/sf", "+decode/sf",
              "prefill TF"]
    lines = [title, " | ".join(f"{h:>14}" if i == 0 else f"{h:>10}" for i, h in enumerate(header))]
    base = results["slowfast"]
    for name, r in results.items():
        cells = [name, r["frames"], r["kept"], r["tokens"], r["prompt"], *(f"{r[s]:.1f}" for s in STAGES),
                 f"{r['step']:.1f}", f"{r['step'] / base['step']:.3f}",
                 f"{(r['step'] + r['decode']) / (base['step'] + base['decode']):.3f}", f"{r['tflops']:.4g}"]
        lines.append(" | ".join(f"{c:>14}" if i == 0 else f"{c:>10}" for i, c in enumerate(cells)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=1, help="run every table this many times (the spread is the noise)")
    parser.add_argument("--backbone", choices=list_backbones(), default="llava_next")
    parser.add_argument("--image-size", type=int, default=None,
                        help="tiny model only; default: the family's real input size (336 / 384 / 448)")
    parser.add_argument("--full-size-random", action="store_true")
    parser.add_argument("--size", choices=sorted(TEXT_CONFIGS), default="7b", help="with --full-size-random")
    parser.add_argument("--num-layers", type=int, default=None, help="full-size widths with fewer layers")
    parser.add_argument("--vision-chunk-size", type=int, default=16)
    parser.add_argument("--reducers", nargs="+", choices=sorted(REDUCERS), default=list(REDUCERS))
    parser.add_argument("--encode-ahead", choices=("off", "on", "both"), default="both",
                        help="configurations without / with encode_ahead (it only overlaps anything on CUDA)")
    parser.add_argument("--whole-methods", nargs="*", choices=WHOLE_METHODS, default=[],
                        help="add configs/reducers/<name>_full.yaml (outer reducer + inner stage) as configurations")
    parser.add_argument("--prune-layer", type=int, default=None, help="every stage's first pruned layer")
    parser.add_argument("--json", type=Path, default=None, help="append every table here as JSON lines")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if "slowfast" not in args.reducers:
        parser.error("--reducers must include slowfast, the baseline of the ratios")
    hf_logging.set_verbosity_error()  # min_new_tokens is set on purpose; silence its per-call warning
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    t0 = time.perf_counter()
    if args.backbone == "llava_next":
        if args.full_size_random:
            backbone = full_size_random(args.size, device, dtype, args.num_layers)
        else:
            model, tokenizer = build_tiny_llava_next(image_size=args.image_size or 336, rope_scaling_factor=2.0)
            backbone = (model.to(device=device, dtype=dtype), tokenizer, "tiny-random-llava-next (random weights)")
    elif args.backbone == "qwen2_5_vl":
        from dyto.models.tiny_qwen2_5_vl import TINY_QWEN_NAME, build_tiny_qwen2_5_vl, full_size_qwen2_5_vl

        dtype = torch.bfloat16 if device == "cuda" else dtype  # Qwen2.5-VL's activations overflow fp16
        if args.full_size_random:
            backbone = full_size_qwen2_5_vl(device, dtype, args.num_layers)
        else:
            model, tokenizer = build_tiny_qwen2_5_vl()
            backbone = (model.to(device=device, dtype=dtype), tokenizer, TINY_QWEN_NAME)
    elif args.backbone == "qwen3_vl":
        from dyto.models.tiny_qwen3_vl import TINY_QWEN3_NAME, build_tiny_qwen3_vl, full_size_qwen3_vl

        dtype = torch.bfloat16 if device == "cuda" else dtype  # the checkpoints' dtype, as Qwen2.5-VL's
        if args.full_size_random:
            backbone = full_size_qwen3_vl(device, dtype, args.num_layers)
        else:
            model, tokenizer = build_tiny_qwen3_vl()
            backbone = (model.to(device=device, dtype=dtype), tokenizer, TINY_QWEN3_NAME)
    elif args.full_size_random:
        backbone = full_size_family(args.backbone, device, dtype, args.num_layers)
    else:
        from dyto.models import tiny_families

        real_size = {"llava_onevision": 384, "internvl": 448}
        builder = getattr(tiny_families, f"build_tiny_{args.backbone}")
        model, tokenizer = builder(image_size=args.image_size or real_size[args.backbone])
        backbone = (model.to(device=device, dtype=dtype), tokenizer, BACKBONES[args.backbone].tiny_name)
    build_s = time.perf_counter() - t0
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.encode_ahead]
    modules = {}
    if args.backbone == "llava_next":
        reducers = {name: REDUCERS[name] for name in args.reducers}
        for ahead in settings:
            for name, reducer in reducers.items():
                module = DyToVideoQA(model="tiny", reducer=reducer(), vision_chunk_size=args.vision_chunk_size,
                                     encode_ahead=ahead)
                module.attach_backbone(*backbone)
                modules[name + ("+ahead" if ahead and args.encode_ahead == "both" else "")] = module.to(device)
                module.on_predict_epoch_start()  # what trainer.predict does first: makes the CUDA streams
        for name in args.whole_methods:
            reducer, stage = whole_method(name, args.backbone, args.prune_layer)
            module = DyToVideoQA(model="tiny", reducer=reducer, vision_chunk_size=args.vision_chunk_size)
            module.inner_stage = stage
            module.attach_backbone(*backbone)
            modules[f"{name}_full"] = module.to(device)
            module.on_predict_epoch_start()
    else:
        options = {"vision_chunk_size": args.vision_chunk_size}
        if args.backbone == "qwen2_5_vl":  # its input size is an option (any multiple of 28), not the tower's
            options["image_size"] = args.image_size or 448
        if args.backbone == "qwen3_vl":    # any multiple of 32; 480 = 15x15 tokens per temporal patch
            options["image_size"] = args.image_size or (480 if args.full_size_random else 96)
        shared = BACKBONES[args.backbone].from_parts(*backbone, **options)
        family = family_reducers(shared.grid[0] * shared.grid[1], shared.preprocessing.frames_per_patch)
        for ahead in settings:
            for name in args.reducers:
                module = VideoQA(shared, reducer=family[name](), encode_ahead=ahead)
                modules[name + ("+ahead" if ahead and args.encode_ahead == "both" else "")] = module.to(device)
                module.on_predict_epoch_start()
        for name in args.whole_methods:
            reducer, stage = whole_method(name, args.backbone, args.prune_layer)
            modules[f"{name}_full"] = module = VideoQA(shared, reducer=reducer, inner_stage=stage).to(device)
            module.on_predict_epoch_start()
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    memory = f"; {torch.cuda.memory_allocated() / 2**30:.1f} GiB of weights" if device == "cuda" else ""
    print(f"model: {backbone[2]}; built in {build_s:.0f} s{memory}; device: {gpu}; {dtype}; "
          f"image {module.image_size}px; vision_chunk_size {args.vision_chunk_size}", flush=True)
    for new_tokens in args.max_new_tokens:
        for module in modules.values():
            module.max_new_tokens = new_tokens
            module.generation_config.update(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        for repeat in range(args.repeats):
            results = run(modules, args.questions)
            print(table(results, f"{new_tokens} new tokens; median of {args.questions} questions (ms); "
                                 f"repeat {repeat + 1}/{args.repeats}"), flush=True)
            for name, r in results.items():
                if "same_answers" in r:
                    print(f"{name}: {r['same_answers']}/{args.questions} answers identical to {name[:-6]}'s")
            row = dict(model=backbone[2], device=gpu, new_tokens=new_tokens, repeat=repeat, results=results)
            if device == "cuda":
                row["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")

if __name__ == "__main__":
    main()
