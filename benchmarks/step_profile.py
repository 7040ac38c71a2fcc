"""What one decoding step at batch 1 spends its time on, from torch's profiler (bench_throughput --profile).

The same prepared question (its LLM input) is generated twice under the profiler, with ``n`` new
tokens and with one (the prefill alone); the difference, divided by ``n - 1``, is one decoding step: its device kernel
time and kernel count (CUDA), or its operator time and count (CPU), against the step's wall time.
On a GPU the gap between wall time and kernel time is the host's share (Python, launches, the
per-step synchronisation of Hugging Face's loop), which a CUDA graph only partly removes; the top
kernels say whether the rest is the weights' matrix products or something else (attention over
the static cache, the LM head, copies).

    lines = profile_step(module_for_n, module_for_one, llm_input, n)
"""

from __future__ import annotations

import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


def _kernels(prof, cuda: bool) -> dict[str, tuple[int, float]]:
    """name -> (count, self time in µs) of the device kernels (CUDA) or the top-level operators (CPU)."""
    out: dict[str, tuple[int, float]] = {}
    for event in prof.events():
        if cuda:
            if event.device_type != DeviceType.CUDA:
                continue
            spent = getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)
        else:
            if event.device_type != DeviceType.CPU or not event.name.startswith("aten::") or event.cpu_parent:
                continue
            spent = event.cpu_time_total
        count, total = out.get(event.name, (0, 0.0))
        out[event.name] = (count + 1, total + spent)
    return out


def _profiled(module, llm_input, cuda: bool):
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        module.generate([llm_input])
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return _kernels(prof, cuda), wall


def question_input(module, batch: dict):
    """The LLM input of a batch of one question, as ``predict_step`` builds it (encode, reduce, prompt)."""
    record = batch["records"][0]
    features = module.encode(batch["pixel_values"][0], with_cls=module.reducer.needs_cls)
    reduction = module.reducer(features.features, features.grid, features.cls)
    prompt = module.backbone.prompt(record["task"], record["question"], record.get("options"))
    return module.backbone.build_input(prompt, reduction)


def profile_step(module, prefill_only, llm_input, new_tokens: int, top: int = 8) -> list[str]:
    """Lines describing one decoding step of ``module`` generating ``llm_input`` alone (batch 1).
    ``prefill_only``: the same module with ``max_new_tokens=1``. Both must be warm (compiled)."""
    cuda = torch.cuda.is_available()
    full, wall_full = _profiled(module, llm_input, cuda)
    base, wall_base = _profiled(prefill_only, llm_input, cuda)
    steps = max(new_tokens - 1, 1)
    step = {k: (n - base.get(k, (0, 0.0))[0], t - base.get(k, (0, 0.0))[1]) for k, (n, t) in full.items()}
    busy = sum(t for _, t in step.values()) / steps / 1e3          # ms per step
    count = sum(n for n, _ in step.values()) / steps
    wall = (wall_full - wall_base) / steps * 1e3
    what = "kernel" if cuda else "operator"
    lines = [f"profile of one decoding step at batch 1 ({steps} steps, under the profiler): wall {wall:.2f} ms, "
             f"{what} time {busy:.2f} ms ({busy / wall:.0%} of it), {count:.0f} {what}s a step; "
             f"the rest ({wall - busy:.2f} ms) is host time the device waits through"]
    for name, (n, t) in sorted(step.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {t / steps / 1e3:7.3f} ms  {n / steps:5.1f}x  {name[:110]}")
    return lines
