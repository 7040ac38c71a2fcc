"""benchmarks/profile_reduce.py's in-situ profile of the reduce stage (bench_throughput --profile):
the reducer wrapped for the step and restored after it, and the lines it prints. The CUDA branch
is checked on hand-made profiler events, since the CPU box has no GPU."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.autograd import DeviceType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from profile_reduce import RANGE, in_situ_lines, profile_in_situ  # noqa: E402


def event(name, start, end, device=DeviceType.CPU, parent=None, kernels=()):
    span = SimpleNamespace(start=start, end=end)
    return SimpleNamespace(name=name, time_range=span, device_type=device, cpu_parent=parent,
                           cpu_time_total=end - start, kernels=[SimpleNamespace(name=k, duration=d) for k, d in kernels])


def test_in_situ_lines_on_cuda_events_count_only_what_runs_inside_the_reducer_calls():
    calls = [event(RANGE, 0, 1000), event(RANGE, 5000, 6000)]
    inside = [event("aten::index_reduce_", 10, 900, parent=calls[0], kernels=[("amax_kernel", 700.0)]),
              event("cudaMalloc", 20, 120), event("cudaStreamSynchronize", 200, 800),
              event("cudaDeviceSynchronize", 950, 990),                          # the profile's own
              event("aten::embedding_bag", 5010, 5500, parent=calls[1], kernels=[("bag_kernel", 300.0)]),
              event("cudaDeviceSynchronize", 5900, 5990)]
    outside = [event("aten::conv3d", 2000, 3000, kernels=[("conv_kernel", 900.0)]), event("cudaFree", 3100, 3200),
               event("amax_kernel", 100, 800, device=DeviceType.CUDA)]   # kernels are read from their operators
    lines = in_situ_lines(calls + inside + outside, [1.0, 1.0], [1.2, 1.1], cuda=True)
    assert "2 reducer calls" in lines[0] and "first 1.00" in lines[0] and "median 1.15 ms, max 1.20" in lines[0]
    assert "kernels inside the calls: 0.50 ms a call (50% of their wall), 1 kernels a call" in lines[1]
    assert lines[2].endswith("cudaMalloc 1x 0.1 ms, cudaStreamSynchronize 1x 0.6 ms")  # no cudaFree, no own syncs
    assert "amax_kernel" in lines[4] and "0.350 ms" in lines[4] and "bag_kernel" in lines[5] and len(lines) == 6


class Doubling:
    needs_cls = False

    def __call__(self, features, grid, cls=None):
        return (features * 2).sum(0)


def test_profile_in_situ_wraps_the_reducer_for_the_step_only(one_thread):
    reducer = Doubling()
    module = SimpleNamespace(reducer=reducer)

    def step():  # three questions, as predict_step would reduce them
        assert not module.reducer.needs_cls  # attributes pass through the wrapper
        for _ in range(3):
            module.reducer(torch.ones(4, 3), (1, 3))
        return [{"timings": {"reduce": 0.5}}] * 3

    lines = profile_in_situ(module, step, top=2)
    assert module.reducer is reducer
    assert "3 reducer calls" in lines[0] and "operators inside the calls" in lines[1]
    assert "none (no CUDA)" in lines[2] and len(lines) == 6 and "aten::" in lines[4]
