"""Questions per second: today's path (one question at a time, eager decoding) against the new one
(a pool of questions in length-aware generation groups, ``generation_loop: static_compiled``
where it can run), in the same process, on a slice of the demo questions; and ms per token at
batch 1 against the weight-bandwidth bound (weight bytes / HBM bandwidth).

What is timed: ``predict_step`` wall time (encode + reduce + prefill + generate, CUDA synchronised
after every step), one untimed warm-up step per path first (on a GPU this is where
``torch.compile`` compiles; its time is printed). Video decoding runs once per question
beforehand, the data side's own code, and is reported separately as the decode rate of one
DataLoader worker against the model's question rate. Every question decodes exactly
``--max-new-tokens`` tokens (``min_new_tokens`` set too), so random weights stopping early at EOS
do not bias the comparison; ``--natural-length`` lets EOS stop them.

The share of identical greedy answers between the two paths is printed: on the CPU tiny model it
must be all of them (fp32, left padding with the mask); on a GPU in fp16 padding and compiled
kernels may flip near-ties (docs/throughput.md).

Models: by default the family's tiny RANDOM-WEIGHT model (``--backbone``, at its tiny input
size); ``--full-size-random --size 7b|34b`` builds the real size with
random weights, with bench_e2e's builders (LLaVA-NeXT-7B/34B, LLaVA-OneVision-7B, InternVL3-8B,
Qwen2.5-VL-7B), fp16 (bf16 for Qwen2.5-VL) on CUDA. Reducer: DyTo, 100 frames, its budget
scaled to the grid as in bench_e2e (3680 at 24x24).

    python benchmarks/bench_throughput.py --threads 1                      # CPU, tiny LLaVA-NeXT
    python benchmarks/bench_throughput.py --full-size-random --size 7b --backbone llava_next \\
        --questions 16 --pool 16 --max-new-tokens 128 --json throughput.jsonl     # one GPU, < 8 min
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_e2e's full-size builders
import bench_e2e  # noqa: E402

from dyto import api  # noqa: E402
from dyto.datamodules.base import BATCH_KEYS, auto_num_workers, available_cpus  # noqa: E402
from dyto.datamodules.video import decode_video  # noqa: E402
from dyto.models.backbone import BACKBONES, build_backbone, list_backbones  # noqa: E402
from dyto.models.batching import length_groups, padding_tokens  # noqa: E402
from dyto.models.videoqa import VideoQA  # noqa: E402
from dyto.records import QARecord, read_jsonl  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"
HBM_GBPS = {"H200": 4800.0, "H100": 3350.0, "A100": 2039.0}


def build(args, device: str, dtype: torch.dtype):
    """The backbone: tiny by registry name, or full size with random weights (bench_e2e's builders)."""
    if not args.full_size_random:
        return build_backbone(args.backbone).to(device=device, dtype=dtype)
    if args.backbone == "llava_next":
        parts = bench_e2e.full_size_random(args.size, device, dtype, args.num_layers)
        return BACKBONES["llava_next"].from_parts(*parts, prompt_family=args.size)
    if args.backbone == "qwen2_5_vl":
        from dyto.models.tiny_qwen2_5_vl import full_size_qwen2_5_vl

        return BACKBONES["qwen2_5_vl"].from_parts(*full_size_qwen2_5_vl(device, dtype, args.num_layers))
    if args.backbone == "qwen3_vl":
        from dyto.models.tiny_qwen3_vl import full_size_qwen3_vl

        return BACKBONES["qwen3_vl"].from_parts(*full_size_qwen3_vl(device, dtype, args.num_layers))
    return BACKBONES[args.backbone].from_parts(*bench_e2e.full_size_family(args.backbone, device, dtype,
                                                                             args.num_layers))


def demo_records(n: int) -> list[QARecord]:
    """The demo questions, cycled to ``n`` (unique ids; video paths made absolute)."""
    rows = list(read_jsonl(DEMO / "questions.jsonl"))
    out = []
    for k in range(n):
        row = dict(rows[k % len(rows)], id=f"{rows[k % len(rows)]['id']}#{k}")
        row["video"] = str(DEMO / row["video"])
        out.append(QARecord.from_dict(row))
    return out


def pools(samples: list[dict], size: int) -> list[dict]:
    """Batches of one concatenated into DataModule batches of ``size``."""
    return [{k: [x for s in samples[i : i + size] for x in s[k]] for k in BATCH_KEYS}
            for i in range(0, len(samples), size)]


def timed(module: VideoQA, batches: list[dict]) -> tuple[list[dict], float]:
    """Records and seconds of ``predict_step`` over ``batches`` (CUDA synchronised)."""
    records, t0 = [], time.perf_counter()
    for i, batch in enumerate(batches):
        records += module.predict_step(batch, i)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"{bad[0]['id']}: {bad[0]['status']}: {bad[0]['error']}")
    return records, seconds


def decode_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decoding step reads: the language model's weights and the LM head, without the input
    embedding table (a step gathers one row of it)."""
    inner = getattr(model, "model", model)
    llm = getattr(inner, "language_model", None) or model.get_decoder()
    seen = {id(p) for p in llm.parameters()}
    total = sum(p.numel() * p.element_size() for p in llm.parameters())
    head = model.get_output_embeddings()
    if head is not None and id(head.weight) not in seen:
        total += head.weight.numel() * head.weight.element_size()
    embed = model.get_input_embeddings().weight
    return total - embed.numel() * embed.element_size() * (id(embed) in seen)


def per_token_ms(records: list[dict], new_tokens: int) -> float:
    """Median decoding ms per token after the first (which the prefill produces)."""
    return statistics.median(r["timings"]["generate"] / max(new_tokens - 1, 1) for r in records)


def module_for(backbone, args, **options) -> VideoQA:
    reducer = bench_e2e.family_reducers(backbone.grid[0] * backbone.grid[1],
                                        backbone.preprocessing.frames_per_patch)["dyto"]()
    module = VideoQA(backbone, reducer=reducer, max_new_tokens=args.max_new_tokens, **options)
    if not args.natural_length:
        module.generation_config.update(min_new_tokens=args.max_new_tokens)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=list_backbones(), default="llava_next")
    parser.add_argument("--full-size-random", action="store_true")
    parser.add_argument("--size", choices=sorted(bench_e2e.TEXT_CONFIGS), default="7b",
                        help="LLaVA-NeXT size with --full-size-random (the other families have one)")
    parser.add_argument("--num-layers", type=int, default=None, help="full-size widths with fewer layers")
    parser.add_argument("--questions", type=int, default=16, help="demo questions, cycled")
    parser.add_argument("--pool", type=int, default=16, help="questions per DataModule batch on the new path")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--natural-length", action="store_true", help="let EOS end answers early")
    parser.add_argument("--generation-loop", choices=("eager", "static_compiled"), default="static_compiled")
    parser.add_argument("--token-questions", type=int, default=3, help="questions for ms/token at batch 1")
    parser.add_argument("--padding-group", type=int, default=4, help="group size for the padding count")
    parser.add_argument("--hbm-gbps", type=float, default=None,
                        help="HBM bandwidth for the bound; default from the GPU name (H200 4800, H100 3350)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="append the results here as one JSON line")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()  # min_new_tokens is set on purpose
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if args.backbone == "qwen2_5_vl" else torch.float16)
    t0 = time.perf_counter()
    backbone = build(args, device, dtype)
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"model: {backbone.model_name}; built in {time.perf_counter() - t0:.0f} s; device: {gpu}; {dtype}; "
          f"{args.questions} questions, pool {args.pool}, {args.max_new_tokens} new tokens", flush=True)

    today = module_for(backbone, args, generation_batch_size=1, generation_loop="eager")
    new = module_for(backbone, args, generation_batch_size="auto", batch_order="length",
                     generation_loop=args.generation_loop)
    samples = [api.question_batch(today, r) for r in demo_records(args.questions + args.pool)]
    if device == "cuda":
        for s in samples:
            s["pixel_values"] = [p.pin_memory() for p in s["pixel_values"]]
    decode_ms = statistics.median(s["decode_ms"][0] for s in samples)
    warm, measured = samples[: args.pool], samples[args.pool :]

    t0 = time.perf_counter()
    timed(today, pools(warm[:1], 1))
    timed(new, pools(warm, args.pool))
    warmup_s = time.perf_counter() - t0
    base, base_s = timed(today, pools(measured, 1))
    fast, fast_s = timed(new, pools(measured, args.pool))
    loop, reason = new.resolved_generation_loop()
    same = sum(a["prediction"] == b["prediction"] and a["prediction2"] == b["prediction2"] for a, b in zip(base, fast))
    base_qps, fast_qps = len(base) / base_s, len(fast) / fast_s
    print(f"today: batch 1, eager: {base_s:.2f} s for {len(base)} questions = {base_qps:.3f} q/s")
    print(f"new:   pool {args.pool}, groups {new.last_group_sizes} (generation_batch_size auto), "
          f"generation_loop {loop}{f' (asked {args.generation_loop}: {reason})' if reason else ''}: "
          f"{fast_s:.2f} s = {fast_qps:.3f} q/s")
    print(f"ratio new/today: {fast_qps / base_qps:.2f}x; warm-up (incl. compilation) {warmup_s:.1f} s; "
          f"identical greedy answers: {same}/{len(base)}")

    lengths = [r["prompt_tokens"] for r in fast]
    groups = {o: length_groups(lengths, args.padding_group, o) for o in ("length", "input")}
    pads = {o: padding_tokens(lengths, g) for o, g in groups.items()}
    print(f"left padding in groups of {args.padding_group}: length-aware {pads['length']} vs input order "
          f"{pads['input']} pad tokens, for {sum(lengths)} prompt tokens")

    eager_ms = per_token_ms(base, args.max_new_tokens)
    token_rows = {"eager": eager_ms}
    if loop != "eager":
        single = module_for(backbone, args, generation_batch_size=1, generation_loop=loop)
        timed(single, pools(warm[:1], 1))  # compiles batch 1
        token_rows[loop] = per_token_ms(timed(single, pools(measured[: args.token_questions], 1))[0],
                                        args.max_new_tokens)
    weights = decode_weight_bytes(backbone.model)
    gbps = args.hbm_gbps or next((v for k, v in HBM_GBPS.items() if k in gpu), None) if device == "cuda" else args.hbm_gbps
    bound = weights / (gbps * 1e9) * 1e3 if gbps else None
    for name, ms in token_rows.items():
        against = f"; bound {bound:.2f} ms at {gbps:.0f} GB/s: {ms / bound:.1f}x the bound" if bound else ""
        print(f"ms per token at batch 1, {name}: {ms:.2f} (decoding weights {weights / 1e6:.1f} MB{against})")
    if bound is None:
        print("weight-bandwidth bound: n/a here (no GPU; give --hbm-gbps to compute it anyway)")

    worker_qps = 1000.0 / decode_ms
    needed, cores = math.ceil(fast_qps / worker_qps), available_cpus()
    print(f"data: one worker decodes + preprocesses {worker_qps:.2f} q/s ({decode_ms:.0f} ms a question, "
          f"{today.num_frames} frames); the new path takes {fast_qps:.3f} q/s -> {needed} workers to keep up; "
          f"num_workers auto gives {auto_num_workers(cores, 1)} on this machine ({cores} cores, one GPU)")
    video = decode_video(demo_records(1)[0].video, today.num_frames)  # the split of one question's time
    t0 = time.perf_counter()
    today.preprocessing(video.frames)
    preprocess_ms = (time.perf_counter() - t0) * 1e3
    print(f"data: of that, preprocessing ({today.preprocessing.resize}, {video.frames.shape[1]}x"
          f"{video.frames.shape[2]} -> {today.preprocessing.size[0]}) takes {preprocess_ms:.0f} ms a question")
    if args.json:
        row = dict(model=backbone.model_name, device=gpu, dtype=str(dtype), questions=len(base), pool=args.pool,
                   new_tokens=args.max_new_tokens, today_qps=base_qps, new_qps=fast_qps, ratio=fast_qps / base_qps,
                   groups=new.last_group_sizes, generation_loop=loop, fallback=reason, identical=same,
                   padding=pads, ms_per_token=token_rows, weight_bytes=weights, bound_ms=bound,
                   worker_qps=worker_qps, workers_needed=needed, preprocess_ms=preprocess_ms, warmup_s=warmup_s)
        with args.json.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
