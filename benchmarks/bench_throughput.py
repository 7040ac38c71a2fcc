"""Questions per second: today's path (one question at a time, eager decoding, the model's own vision
tower) against the new one (a pool of questions in length-aware generation groups, encoded together,
``--generation-loop``, by default ``graphed``), in the same process, on a slice of the demo
questions; a per-stage account of the new path against the hardware's bounds; and ms per token at
batch 1 against the weight-bandwidth bound (weight bytes / HBM bandwidth) for eager decoding and for
each of ``--token-loops`` (by default ``static_compiled`` and ``graphed``: Hugging Face's loop with a
compiled forward against dyto's loop with the whole step one CUDA graph).

What is timed: ``predict_step`` wall time (encode + reduce + prefill + generate, CUDA synchronised
after every step), one untimed warm-up step per path first (on a GPU this is where
``torch.compile`` compiles; its time is printed). Video decoding runs once per question
beforehand, the data side's own code, and is reported separately as the decode rate of one
DataLoader worker against the model's question rate. Every question decodes exactly
``--max-new-tokens`` tokens (``min_new_tokens`` set too), so random weights stopping early at EOS
do not bias the comparison; ``--natural-length`` lets EOS stop them. ``--today-questions N``
times today's path on the first N questions only (its rate; answers compared on those N).

The per-stage account (stage_account.py): for the new path's questions, each stage's time (the
records' own timings, summed), its work from the model's config (vision and prefill FLOPs, the
reducer's and the decoding steps' bytes) and its bound at ``--peak-tflops`` / ``--hbm-gbps``
(defaults: an H200's measured ~790 TFLOP/s bf16 dense and 4.8 TB/s), then the pool's time against
the sum of the bounds. Under the reducer's line, its ms per question (the records' ``reduce``
span: ``grid_for``, the reducer, ``reduce_extras``): the measured pool's first question, min,
median, max and which was slowest, then the warm-up pool's first and median. ``--profile`` adds
where one decoding step at batch 1 spends its time (step_profile.py), then the reduce stage in situ
(profile_reduce.py's ``profile_in_situ``): the first measured pool once more with the new path's
backbone, vision tower and ``encode_batch`` (prefill only, eager loop: a few seconds), the
profiler over the whole step, and for the reducer calls alone their wall ms, their top kernels
(CUDA) or operators (CPU), and the CUDA runtime's malloc/free/synchronise/memcpy calls inside them.
Why: the H200 run of 2026-12-04 spent 160 ms a question in Qwen2.5-VL-7B's reduce stage (9 ms for
the reducer alone on the CPU); the next GPU run's per-question figures and in-situ profile tell
one slow question, allocations after the pooled tower, a slow bf16 kernel and time that is not the
reducer's apart.

The share of identical greedy answers between the two paths is printed: on the CPU tiny model it
must be all of them (fp32, left padding with the mask, the batched tower bitwise the model's own);
on a GPU in fp16 padding, batch shapes and compiled kernels may flip near-ties (docs/throughput.md).

Models: by default the family's tiny RANDOM-WEIGHT model (``--backbone``, at its tiny input
size); ``--full-size-random --size 7b|34b`` builds the real size with
random weights, with bench_e2e's builders (LLaVA-NeXT-7B/34B, LLaVA-OneVision-7B, InternVL3-8B,
Qwen2.5-VL-7B), fp16 (bf16 for Qwen2.5-VL) on CUDA. Reducer: DyTo, 100 frames, its budget
scaled to the grid as in bench_e2e (3680 at 24x24).

    python benchmarks/bench_throughput.py --threads 1                      # CPU, tiny LLaVA-NeXT
    python benchmarks/bench_throughput.py --full-size-random --size 7b --backbone qwen2_5_vl \\
        --questions 16 --pool 16 --max-new-tokens 128 --today-questions 4 --profile   # one GPU (gpu_check.sh)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_e2e's full-size builders, the account
import bench_e2e  # noqa: E402
from stage_account import (account, decode_bytes, decode_weight_bytes, kv_bytes_per_token,  # noqa: E402
                           prefill_flops, vision_flops)
from profile_reduce import profile_in_situ  # noqa: E402
from step_profile import profile_step, question_input  # noqa: E402

from dyto import api  # noqa: E402
from dyto.datamodules.base import BATCH_KEYS, auto_num_workers, available_cpus  # noqa: E402
from dyto.datamodules.video import decode_video  # noqa: E402
from dyto.models.backbone import BACKBONES, build_backbone, list_backbones  # noqa: E402
from dyto.models.batching import length_groups, padding_tokens  # noqa: E402
from dyto.models.generation_loop import GENERATION_LOOPS  # noqa: E402
from dyto.models.videoqa import VideoQA  # noqa: E402
from dyto.records import QARecord, read_jsonl  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"


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


def demo_samples(module: VideoQA, records: list[QARecord]) -> list[dict]:
    """Batches of one for ``records``; each video is decoded once (the demo has two) and its frames
    shared by the questions about it, whose ``decode_ms`` is the first decode's."""
    first: dict[str, dict] = {}
    out = []
    for record in records:
        if record.video not in first:
            sample = first[record.video] = api.question_batch(module, record)
            if torch.cuda.is_available():  # as the DataModule's loader pins them
                sample["pixel_values"] = [p.pin_memory() for p in sample["pixel_values"]]
        out.append(dict(first[record.video], ids=[record.id], records=[record.to_dict()]))
    return out


def pools(samples: list[dict], size: int) -> list[dict]:
    """Batches of one concatenated into DataModule batches of ``size``."""
    return [{k: [x for s in samples[i : i + size] for x in s[k]] for k in BATCH_KEYS}
            for i in range(0, len(samples), size)]


@contextlib.contextmanager
def tower(backbone, name: str | None):
    """Qwen2.5-VL's vision tower set to ``name`` for the block (None, or another family: unchanged)."""
    before = getattr(backbone, "vision_tower", None)
    if name is None or before is None:
        yield
        return
    backbone.vision_tower = name
    try:
        yield
    finally:
        backbone.vision_tower = before


def timed(module: VideoQA, batches: list[dict], groups: list | None = None) -> tuple[list[dict], float]:
    """Records and seconds of ``predict_step`` over ``batches`` (CUDA synchronised); ``groups``
    collects the prompt lengths of every generation group."""
    records, t0 = [], time.perf_counter()
    for i, batch in enumerate(batches):
        records += module.predict_step(batch, i)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if groups is not None:
            groups += module.last_group_lengths
    seconds = time.perf_counter() - t0
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        raise RuntimeError(f"{bad[0]['id']}: {bad[0]['status']}: {bad[0]['error']}")
    return records, seconds


def per_token_ms(records: list[dict], new_tokens: int) -> float:
    """Median decoding ms per token after the first (which the prefill produces)."""
    return statistics.median(r["timings"]["generate"] / max(new_tokens - 1, 1) for r in records)


def module_for(backbone, args, max_new_tokens: int | None = None, reducer=None, **options) -> VideoQA:
    """A ``VideoQA`` on ``backbone`` with ``reducer`` (default: a new DyTo, bench_e2e's budget for the grid)."""
    reducer = reducer or bench_e2e.family_reducers(backbone.grid[0] * backbone.grid[1],
                                                   backbone.preprocessing.frames_per_patch)["dyto"]()
    new_tokens = max_new_tokens or args.max_new_tokens
    module = VideoQA(backbone, reducer=reducer, max_new_tokens=new_tokens, **options)
    if not args.natural_length:
        module.generation_config.update(min_new_tokens=new_tokens)
    return module


def per_question(records: list[dict], stage: str = "reduce") -> dict:
    """``stage``'s ms for each question in order (``all``), their first, min, median and max, and
    the index of the slowest."""
    ms = [r["timings"][stage] for r in records]
    return dict(first=ms[0], min=min(ms), median=statistics.median(ms), max=max(ms), slowest=ms.index(max(ms)), all=ms)


def stage_lines(backbone, args, samples: list[dict], records: list[dict], groups: list, wall_s: float,
                workers: int, warm: list[dict]) -> tuple[list[str], dict]:
    """The per-stage account of the new path (stage_account.py), the reducer's ms per question in
    the measured pool (``records``) and the warm-up pool (``warm``), and their figures for the JSON row."""
    model, dtype = backbone.model, backbone.dtype
    vision, reducer_bytes = 0, 0
    hidden = model.config.get_text_config().hidden_size
    for sample in samples:
        pixels = sample["pixel_values"][0]
        per_patch = backbone.preprocessing.frames_per_patch
        grid_thw = None
        if backbone.name == "qwen2_5_vl":
            patch = model.config.vision_config.patch_size
            grid_thw = (math.ceil(pixels.shape[0] / per_patch), pixels.shape[2] // patch, pixels.shape[3] // patch)
        flops = vision_flops(backbone, pixels.shape[0], grid_thw)
        vision = None if flops is None or vision is None else vision + flops
        h, w = backbone.grid_for(pixels)
        reducer_bytes += math.ceil(pixels.shape[0] / per_patch) * h * w * hidden * torch.finfo(dtype).bits // 8
    spent = {k: sum(r["timings"][k] for r in records) / 1e3 for k in ("encode", "reduce", "prefill", "generate")}
    host = sum(s["decode_ms"][0] for s in samples) / 1e3
    weights = decode_weight_bytes(model)
    stages = {
        "host decode+prep": (host, None, f"CPU, in one process; {workers} DataLoader workers overlap it"),
        "vision encoder": (spent["encode"], vision, "flop") if vision is not None else
        (spent["encode"], None, f"no FLOP arithmetic for {backbone.name}"),
        "reducer": (spent["reduce"], reducer_bytes, "byte"),
        "prefill": (spent["prefill"], sum(prefill_flops(model.config, n) for g in groups for n in g), "flop"),
        "decoding": (spent["generate"], decode_bytes(weights, kv_bytes_per_token(model.config, dtype), groups,
                                                     args.max_new_tokens), "byte"),
    }
    lines = account(stages, wall_s, args.peak_tflops * 1e12, args.hbm_gbps * 1e9)
    other = wall_s - sum(spent.values())
    lines.insert(-1, f"  {'other (prompts, Python)':<20} {other:8.3f} s")
    ms, warm_ms = per_question(records), per_question(warm)
    lines.insert(list(stages).index("reducer") + 1,
                 f"    per question: first {ms['first']:.1f} ms, min {ms['min']:.1f}, median {ms['median']:.1f}, "
                 f"max {ms['max']:.1f} (question {ms['slowest'] + 1} of {len(records)}); warm-up pool: first "
                 f"{warm_ms['first']:.1f}, median {warm_ms['median']:.1f}")
    figures = {name: dict(seconds=sec, work=work, unit=unit) for name, (sec, work, unit) in stages.items()}
    figures["reducer"].update(per_question_ms=ms, warmup_per_question_ms=warm_ms)
    return lines, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=list_backbones(), default="llava_next")
    parser.add_argument("--full-size-random", action="store_true")
    parser.add_argument("--size", choices=sorted(bench_e2e.TEXT_CONFIGS), default="7b",
                        help="LLaVA-NeXT size with --full-size-random (the other families have one)")
    parser.add_argument("--num-layers", type=int, default=None, help="full-size widths with fewer layers")
    parser.add_argument("--questions", type=int, default=16, help="demo questions, cycled")
    parser.add_argument("--today-questions", type=int, default=None, help="time today's path on the first N only")
    parser.add_argument("--pool", type=int, default=16, help="questions per DataModule batch on the new path")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--natural-length", action="store_true", help="let EOS end answers early")
    parser.add_argument("--generation-loop", choices=GENERATION_LOOPS, default="graphed", help="the new path's loop")
    parser.add_argument("--token-loops", nargs="+", choices=GENERATION_LOOPS, default=["static_compiled", "graphed"],
                        help="loops timed at batch 1 beside today's eager one (the last is profiled)")
    parser.add_argument("--encode-batch", choices=("question", "pool"), default="pool")
    parser.add_argument("--vision-tower", choices=("batched", "transformers"), default="batched",
                        help="Qwen2.5-VL's tower on the new path (today's path runs the model's own)")
    parser.add_argument("--token-questions", type=int, default=3, help="questions for ms/token at batch 1")
    parser.add_argument("--profile", action="store_true",
                        help="profile one decoding step at batch 1, and the reduce stage in situ")
    parser.add_argument("--padding-group", type=int, default=4, help="group size for the padding count")
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="dense bf16/fp16 FLOP/s for the bounds")
    parser.add_argument("--hbm-gbps", type=float, default=4800.0, help="memory bandwidth for the bounds")
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
          f"{args.questions} questions, pool {args.pool}, {args.max_new_tokens} new tokens; bounds at "
          f"{args.peak_tflops:.0f} TFLOP/s and {args.hbm_gbps:.0f} GB/s", flush=True)

    today = module_for(backbone, args, generation_batch_size=1, generation_loop="eager")
    new = module_for(backbone, args, generation_batch_size="auto", batch_order="length",
                     generation_loop=args.generation_loop, encode_batch=args.encode_batch)
    samples = demo_samples(today, demo_records(args.questions + args.pool))
    decode_ms = statistics.median(s["decode_ms"][0] for s in samples)
    warm, measured = samples[: args.pool], samples[args.pool :]
    baseline = measured[: args.today_questions or len(measured)]

    t0 = time.perf_counter()
    with tower(backbone, "transformers"):
        timed(today, pools(warm[:1], 1))
    with tower(backbone, args.vision_tower):
        warm_records = timed(new, pools(warm, args.pool))[0]
    warmup_s = time.perf_counter() - t0
    with tower(backbone, "transformers"):
        base, base_s = timed(today, pools(baseline, 1))
    groups: list[list[int]] = []
    with tower(backbone, args.vision_tower):
        fast, fast_s = timed(new, pools(measured, args.pool), groups)
    loop, reason = new.resolved_generation_loop()
    same = sum(a["prediction"] == b["prediction"] and a["prediction2"] == b["prediction2"] for a, b in zip(base, fast))
    base_qps, fast_qps = len(base) / base_s, len(fast) / fast_s
    print(f"today: batch 1, eager, the model's own vision tower: {base_s:.2f} s for {len(base)} questions = "
          f"{base_qps:.3f} q/s")
    print(f"new:   pool {args.pool}, groups {new.last_group_sizes} (generation_batch_size auto), encode_batch "
          f"{args.encode_batch}, generation_loop {loop}{f' (asked {args.generation_loop}: {reason})' if reason else ''}"
          f"{f', vision_tower {args.vision_tower}' if args.backbone == 'qwen2_5_vl' else ''}: "
          f"{fast_s:.2f} s for {len(fast)} questions = {fast_qps:.3f} q/s")
    print(f"ratio new/today: {fast_qps / base_qps:.2f}x; warm-up (incl. compilation) {warmup_s:.1f} s; "
          f"identical greedy answers: {same}/{len(base)}")

    lengths = [r["prompt_tokens"] for r in fast]
    by_order = {o: length_groups(lengths, args.padding_group, o) for o in ("length", "input")}
    pads = {o: padding_tokens(lengths, g) for o, g in by_order.items()}
    print(f"left padding in groups of {args.padding_group}: length-aware {pads['length']} vs input order "
          f"{pads['input']} pad tokens, for {sum(lengths)} prompt tokens")

    cores = available_cpus()
    workers = auto_num_workers(cores, 1)
    lines, stages = stage_lines(backbone, args, measured, fast, groups, fast_s, max(workers, 1), warm_records)
    print(f"per-stage account of the new path ({len(fast)} questions; share = bound / time):")
    print("\n".join(lines))

    eager_ms = per_token_ms(base, args.max_new_tokens)
    token_rows = {"eager": eager_ms}
    single = None
    for name in dict.fromkeys(args.token_loops):  # the last one is profiled
        single = module_for(backbone, args, generation_batch_size=1, generation_loop=name)
        ran, why = single.resolved_generation_loop()
        if ran in token_rows:
            print(f"ms per token at batch 1, {name}: runs as {ran} here ({why}), measured once")
            continue
        with tower(backbone, args.vision_tower):
            timed(single, pools(warm[:1], 1))  # compiles batch 1
            token_rows[ran] = per_token_ms(timed(single, pools(measured[: args.token_questions], 1))[0],
                                           args.max_new_tokens)
    weights = decode_weight_bytes(backbone.model)
    bound = weights / (args.hbm_gbps * 1e9) * 1e3
    for name, ms in token_rows.items():
        print(f"ms per token at batch 1, {name}: {ms:.2f} (decoding weights {weights / 1e6:.1f} MB; bound "
              f"{bound:.3f} ms at {args.hbm_gbps:.0f} GB/s: {ms / bound:.1f}x the bound)")
    if args.profile:
        profiled = single or today
        prefill_only = module_for(backbone, args, max_new_tokens=1, generation_batch_size=1,
                                  generation_loop=profiled.generation_loop)
        with tower(backbone, args.vision_tower):
            timed(prefill_only, pools(warm[:1], 1))
            llm_input = question_input(profiled, measured[0])
            print("\n".join(profile_step(profiled, prefill_only, llm_input, args.max_new_tokens)))
        # the reduce stage in situ: the first measured pool again, prefill only, new's reducer and encode_batch
        in_situ = module_for(backbone, args, max_new_tokens=1, reducer=new.reducer, generation_batch_size="auto",
                             batch_order="length", generation_loop="eager", encode_batch=args.encode_batch)
        with tower(backbone, args.vision_tower):
            batch = pools(measured[: args.pool], args.pool)[0]
            print("\n".join(profile_in_situ(in_situ, lambda: timed(in_situ, [batch])[0])))

    worker_qps = 1000.0 / decode_ms
    needed = math.ceil(fast_qps / worker_qps)
    print(f"data: one worker decodes + preprocesses {worker_qps:.2f} q/s ({decode_ms:.0f} ms a question, "
          f"{today.num_frames} frames); the new path takes {fast_qps:.3f} q/s -> {needed} workers to keep up; "
          f"num_workers auto gives {workers} on this machine ({cores} cores, one GPU)")
    video = decode_video(demo_records(1)[0].video, today.num_frames)  # the split of one question's time
    t0 = time.perf_counter()
    today.preprocessing(video.frames)
    preprocess_ms = (time.perf_counter() - t0) * 1e3
    print(f"data: of that, preprocessing ({today.preprocessing.resize}, {video.frames.shape[1]}x"
          f"{video.frames.shape[2]} -> {today.preprocessing.size[0]}) takes {preprocess_ms:.0f} ms a question")
    if args.json:
        row = dict(model=backbone.model_name, device=gpu, dtype=str(dtype), questions=len(fast), today_questions=len(base),
                   pool=args.pool, new_tokens=args.max_new_tokens, today_qps=base_qps, new_qps=fast_qps,
                   ratio=fast_qps / base_qps, groups=new.last_group_sizes, generation_loop=loop, fallback=reason,
                   encode_batch=args.encode_batch, identical=same, padding=pads, ms_per_token=token_rows,
                   weight_bytes=weights, bound_ms=bound, stages=stages, pool_s=fast_s, peak_tflops=args.peak_tflops,
                   hbm_gbps=args.hbm_gbps, worker_qps=worker_qps, workers_needed=needed, preprocess_ms=preprocess_ms,
                   warmup_s=warmup_s)
        with args.json.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
