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

Alone, the reducer may not show what costs it time inside a pool, so :func:`profile_in_situ`
(``bench_throughput.py --profile``) profiles it where it runs: the reducer calls of one pooled
``predict_step``, right after the pool's vision tower, with the same top list, the CUDA runtime's
allocation and synchronisation calls, and the wall time of each call.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import family_reducers  # noqa: E402

SHAPES = {  # name: (frames or temporal patches, grid, width, frames per patch)
    "llava_next_7b": (100, (24, 24), 4096, 1),
    "qwen2_5_vl_7b": (50, (16, 16), 3584, 2),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _outermost_op(event) -> bool:
    """An ``aten::`` operator not called by another one (what a caller wrote, its children included)."""
    if not event.name.startswith("aten::"):
        return False
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return True


def spent(events, cuda: bool) -> list[tuple[str, float]]:
    """(name, µs) of each device kernel among the profiler's ``events`` (``cuda``: its self device
    time), else of each outermost ``aten::`` operator (its CPU time, children included)."""
    if cuda:
        return [(e.name, getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0))
                for e in events if e.device_type == DeviceType.CUDA]
    return [(e.name, e.cpu_time_total) for e in events if e.device_type == DeviceType.CPU and _outermost_op(e)]


def top_lines(pairs: list[tuple[str, float]], k: int, calls: int = 1) -> list[str]:
    """The ``k`` names that took longest in ``pairs`` (name, µs): ms and count per call, over ``calls``."""
    totals: dict[str, list[float]] = {}
    for name, us in pairs:
        row = totals.setdefault(name, [0, 0.0])
        row[0] += 1
        row[1] += us
    rows = sorted(totals.items(), key=lambda kv: -kv[1][1])[:k]
    return [f"    {t / calls / 1e3:8.3f} ms {n / calls:7.1f}x  {name[:110]}" for name, (n, t) in rows]


def top_events(events, cuda: bool, k: int) -> list[str]:
    """The ``k`` kernels (CUDA) or outermost operators (CPU) of the profiler's ``events`` that took longest."""
    return top_lines(spent(events, cuda), k)


RANGE = "bench: reducer call"  # the profiler range around each reducer call in situ
RUNTIME = ("alloc", "free", "synchronize", "memcpy")  # CUDA runtime and driver calls counted in situ


class _Ranged:
    """The reducer, each call inside the profiler range ``RANGE`` and synchronised before the range
    ends (so its kernels run inside it); ``ms`` keeps each call's wall time. Other attributes: the reducer's."""

    def __init__(self, reducer):
        self.reducer, self.ms = reducer, []

    def __getattr__(self, name):
        return getattr(self.__dict__["reducer"], name)

    def __call__(self, *args, **kwargs):
        sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        sync()
        t0 = time.perf_counter()
        with record_function(RANGE):
            out = self.reducer(*args, **kwargs)
            sync()
        self.ms.append((time.perf_counter() - t0) * 1e3)
        return out


def _inside(events, ranges) -> list:
    """The host-side ``events`` (operators, CUDA runtime calls) that start inside one of ``ranges``
    (their (start, end) in µs, sorted, disjoint), the ranges themselves left out."""
    starts = [s for s, _ in ranges]
    out = []
    for e in events:
        i = bisect.bisect_right(starts, e.time_range.start) - 1
        if e.device_type == DeviceType.CPU and e.name != RANGE and i >= 0 and e.time_range.start <= ranges[i][1]:
            out.append(e)
    return out


def profile_in_situ(module, step, top: int = 8) -> list[str]:
    """Lines on ``module``'s reducer calls during ``step()`` (which runs ``module.predict_step`` on
    one pool and returns its records), under torch's profiler (CPU, and CUDA where there is one).

    Printed: each call's wall ms (first, median, max) against the records' ``reduce`` span, which
    also holds ``grid_for`` and ``reduce_extras`` (a gap says the time is not the reducer's); the
    device kernel time inside the calls (CUDA; operator time on the CPU) and its share of the wall
    (a small share: the host, syncs or allocations wait it out); the CUDA runtime's malloc, free,
    synchronise and memcpy calls inside them, with their host time (the per-call synchronisation
    this profile adds is left out); and the top kernels or operators per call."""
    cuda = torch.cuda.is_available()
    ranged = _Ranged(module.reducer)
    module.reducer = ranged
    try:
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
            records = step()
    finally:
        module.reducer = ranged.reducer
    return in_situ_lines(prof.events(), ranged.ms, [r["timings"]["reduce"] for r in records], cuda, top)


def in_situ_lines(events, ms: list[float], spans: list[float], cuda: bool, top: int = 8) -> list[str]:
    """:func:`profile_in_situ`'s lines from the profiler's ``events``, each reducer call's wall ``ms``
    and the records' reduce ``spans`` (ms)."""
    ranges = sorted((e.time_range.start, e.time_range.end) for e in events if e.name == RANGE)
    inside, calls = _inside(events, ranges), len(ms)
    if not calls:
        return ["reduce stage in situ: the reducer was not called"]
    if cuda:  # the kernels, memcpys and memsets the profiler attributes (by correlation id) to the operators inside
        work, what = [(k.name, k.duration) for e in inside for k in e.kernels], "kernels"
    else:
        work, what = spent(inside, cuda), "operators"
    busy = sum(us for _, us in work) / 1e3
    wall = sum(ms)
    runtime: dict[str, list[float]] = {}
    for e in inside:
        if e.name.startswith("cu") and any(w in e.name.lower() for w in RUNTIME):
            row = runtime.setdefault(e.name, [0, 0.0])
            row[0] += 1
            row[1] += e.cpu_time_total / 1e3
    if "cudaDeviceSynchronize" in runtime:  # this profile's own, one a call (the reducer's are stream syncs)
        runtime["cudaDeviceSynchronize"][0] -= min(calls, runtime["cudaDeviceSynchronize"][0])
    said = ", ".join(f"{name} {n}x {ms:.1f} ms" for name, (n, ms) in sorted(runtime.items()) if n)
    per = sorted(ms)
    lines = [f"reduce stage in situ ({calls} reducer calls of one pool, under the profiler): wall "
             f"{wall / calls:.2f} ms a call (first {ms[0]:.2f}, median {statistics.median(per):.2f}, "
             f"max {per[-1]:.2f}); the records' reduce span (grid_for + reducer + reduce_extras): median "
             f"{statistics.median(spans):.2f} ms, max {max(spans):.2f}",
             f"  {what} inside the calls: {busy / calls:.2f} ms a call ({busy / wall:.0%} of their wall), "
             f"{len(work) / calls:.0f} {what} a call",
             f"  CUDA runtime calls inside, over all {calls}: {said or ('none' if cuda else 'none (no CUDA)')}",
             f"  top {what} a call:"]
    return lines + top_lines(work, top, calls)


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
            print("\n".join(top_events(prof.events(), cuda, args.top)))


if __name__ == "__main__":
    main()
