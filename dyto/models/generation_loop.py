"""How the LLM's token-by-token loop runs: ``eager`` (Hugging Face's default), ``static_compiled`` or ``graphed``.

New in the throughput work. Eager greedy decoding launches every kernel of every layer from
Python for each new token; on an H100 at 7B that took 28-40 ms a token where reading the weights
takes ~4.4 ms (benchmarks/results/README.md). ``static_compiled`` uses transformers' compiled
generation: a static KV cache (``cache_implementation="static"``, preallocated, fixed shapes)
and the decoding step's forward through ``torch.compile`` (``CompileConfig``; by default inductor
with ``mode="reduce-overhead"``, i.e. CUDA graphs), which transformers 5.x applies to the decoding
steps (the prefill runs uncompiled) with ``inputs_embeds`` and with Qwen2.5-VL's explicit M-RoPE
positions alike.

Shapes: the static cache is ``[B, kv_heads, max_cache_len, head_dim]`` per layer. A new shape
means a new compilation, so ``max_cache_len`` is rounded up to a multiple of
``STATIC_CACHE_BUCKET`` (and transformers keeps the largest length seen, so the cache only grows);
each distinct group size B compiles once.

Where it cannot run (no CUDA device, torch older than 2.5, a model without static-cache support)
the loop falls back to ``eager``: one line says so, once, and the run's fingerprint records what
ran. What it changes: the compiled kernels and the longer (masked) attention over the static cache
round differently from eager ones in fp16/bf16, so a greedy answer can differ after a near-tie;
``generation_loop: eager`` restores the eager answers. On the CPU the static cache (also traced by
TorchDynamo) gives the eager answers exactly (tests/test_throughput.py).

``graphed`` (:mod:`dyto.models.graphed_loop`) is dyto's own greedy loop over the same static cache,
with the whole step (not only the forward) in one CUDA graph and no host synchronisation per token.

    from dyto.models.generation_loop import resolve_generation_loop, static_compiled_config
"""

from __future__ import annotations

import copy
import math

import torch
from transformers import CompileConfig, GenerationConfig

__all__ = ["GENERATION_LOOPS", "STATIC_CACHE_BUCKET", "resolve_generation_loop", "static_cache_length",
           "static_compiled_config", "CompileLog"]

GENERATION_LOOPS = ("eager", "static_compiled", "graphed")  # graphed: dyto.models.graphed_loop
STATIC_CACHE_BUCKET = 1024  # tokens: static cache lengths are multiples of this (fewer recompilations)
MIN_TORCH = (2, 5)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def resolve_generation_loop(requested: str, model: torch.nn.Module, device: torch.device) -> tuple[str, str | None]:
    """``(what runs, why not what was asked | None)`` for ``requested`` on ``model`` at ``device``."""
    if requested not in GENERATION_LOOPS:
        raise ValueError(f"unknown generation_loop {requested!r}; expected one of {GENERATION_LOOPS}")
    if requested == "eager":
        return "eager", None
    if requested == "graphed":  # dyto's own loop: on the CPU it runs without graph and compiler
        return "graphed", None
    if device.type != "cuda":
        return "eager", f"no CUDA device ({device.type}): compiled decoding needs CUDA graphs"
    if _torch_version() < MIN_TORCH:
        return "eager", f"torch {torch.__version__} is older than {'.'.join(map(str, MIN_TORCH))}"
    if not getattr(model, "_can_compile_fullgraph", False):
        return "eager", f"{type(model).__name__} does not support a static KV cache"
    return "static_compiled", None


def static_cache_length(longest_prompt: int, max_new_tokens: int) -> int:
    """The static cache length of a group: prompt + new tokens, rounded up to ``STATIC_CACHE_BUCKET``."""
    return math.ceil((longest_prompt + max_new_tokens) / STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET


class CompileLog:
    """Says once per process and shape that a compiled decoding step was built, with the time its first
    group took (compilation and CUDA-graph capture included); later groups of that shape reuse it.

    Kept on the model (``model._dyto_compile_log``), so every module sharing the model, and every pool,
    sees what was compiled already: ``torch.compile``'s cache lives as long as the process.
    """

    def __init__(self):
        self.first_s: dict[tuple[int, int], float] = {}  # (group size, static cache length) -> seconds

    @staticmethod
    def of(model: torch.nn.Module) -> "CompileLog":
        if "_dyto_compile_log" not in model.__dict__:
            model.__dict__["_dyto_compile_log"] = CompileLog()
        return model.__dict__["_dyto_compile_log"]

    def note(self, size: int, cache_length: int, seconds: float, tokens: int,
             loop: str = "static_compiled") -> str | None:
        """The line to print for a group of ``size`` rows, or None when that shape ran before."""
        if (size, cache_length) in self.first_s:
            return None
        self.first_s[size, cache_length] = seconds
        return (f"generation_loop {loop}: compiled the decoding step for groups of {size} with a "
                f"{cache_length}-token static cache; its first group took {seconds:.1f} s for {tokens} tokens "
                f"(compilation included; {len(self.first_s)} shape(s) in this process, "
                f"{sum(self.first_s.values()):.1f} s of first groups); later groups of this shape reuse it")


def static_compiled_config(config: GenerationConfig, longest_prompt: int, *, backend: str = "inductor",
                           mode: str | None = "reduce-overhead", any_device: bool = False) -> GenerationConfig:
    """A copy of ``config`` that generates with a static cache and a compiled decoding step.

    ``max_cache_len`` = (``longest_prompt`` + ``max_new_tokens``) rounded up to the bucket.
    ``backend`` / ``mode`` / ``any_device`` exist for the CPU tests (``backend="eager"`` traces
    with TorchDynamo without generating kernels); runs use the defaults.
    """
    out = copy.deepcopy(config)
    compile_config = CompileConfig(fullgraph=False, dynamic=False, backend=backend, mode=mode)
    compile_config._compile_all_devices = any_device
    out.update(cache_implementation="static", max_cache_len=static_cache_length(longest_prompt, out.max_new_tokens),
               compile_config=compile_config, disable_compile=False)
    return out
