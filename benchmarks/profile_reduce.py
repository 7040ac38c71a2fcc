"""Where DyTo's reduce stage spends its time, at the 7B backbones' real feature shapes and dtypes.

On an H200 (benchmarks/results/gpu_check_h200_2026-12-04) the reduce stage took 160 ms a question
on Qwen2.5-VL-7B against 7 ms on LLaVA-NeXT-7B, while on the CPU the same reducer on Qwen's
shapes takes 9 ms. This script times the reducer alone (CUDA synchronised, median of --repeats
after one warm-up) on random features of each shape, in each dtype asked, and prints the top
operators (CPU) or kernels (CUDA) of one call from torch's profiler, so the GPU run says which op
and which dtype the time belongs to.

Shapes (frames or temporal patches, tokens per frame, width) and budgets as bench_e2e's
``family_reducers``: LLaVA-NeXT-7B [100, 24x24, 4096] budget 3680; Qwen2.5-VL-7B [50, 16x16, 3584]
budget 818 (100 frames folded two per temporal patch).

    python benchmarks/profile_reduce.py                        # CPU, fp32/fp16/bf16
    python benchmarks/profile_reduce.py --dtypes bfloat16 float16 float32 --repeats 5   # a GPU (gpu_check.sh)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import family_reducers  # noqa: E402

SHAPES = {  # name: (frames or temporal patches, grid, width, frames per patch)
    "llava_next_7b": (100, (24, 24), 4096, 1),
    "qwen2_5_vl_7b": (50, (16, 16), 3584, 2),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def top_events(prof, cuda: bool, k: int) -> list[str]:
    totals: dict[str, list[float]] = {}
    for e in prof.events():
        if cuda and e.device_type == DeviceType.CUDA:
            spent = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        elif not cuda and e.device_type == DeviceType.CPU and e.name.startswith("aten::") and not e.cpu_parent:
            spent = e.cpu_time_total
        else:
            continue
        row = totals.setdefault(e.name, [0, 0.0])
        row[0] += 1
        row[1] += spent
    rows = sorted(totals.items(), key=lambda kv: -kv[1][1])[:k]
    return [f"    {t / 1e3:8.3f} ms {n:6d}x  {name[:110]}" for name, (n, t) in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["float32", "float16", "bfloat16"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    print(f"device: {torch.cuda.get_device_name() if cuda else f'CPU, {torch.get_num_threads()} threads'}; "
          f"torch {torch.__version__}")
    for name in args.shapes:
        frames, grid, width, per_patch = SHAPES[name]
        reducer = family_reducers(grid[0] * grid[1], per_patch)["dyto"]()
        g = torch.Generator().manual_seed(0)
        base = torch.randn(frames, grid[0] * grid[1], width, generator=g)
        for dname in args.dtypes:
            features = base.to(device=device, dtype=DTYPES[dname])
            reducer(features, grid, None)  # warm-up
            sync()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = reducer(features, grid, None)
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                reducer(features, grid, None)
                sync()
            print(f"{name} {list(features.shape)} {dname}, budget {reducer.budget}: "
                  f"{statistics.median(times):.1f} ms (median of {args.repeats}), {out.tokens.shape[0]} tokens out")
            print("\n".join(top_events(prof, cuda, args.top)))


if __name__ == "__main__":
    main()
