"""Length-aware grouping of LLM inputs for batched greedy generation, its memory sizing, and
the generation of a pool group by group (``VideoQA.generate``).

New in the throughput work (not in the reference, which answers one question at a time): the
DataModule batch is a *pool* of questions; their LLM inputs are cut into generation groups so
that sequences of similar length share a group (little left padding), each group no larger than
``generation_batch_size`` or, with ``"auto"``, than what the free accelerator memory holds for
its KV cache. Answers go back to their questions by index, so records keep the batch's order.

Why answers do not depend on it on a CPU: left padding with the attention mask makes each row of
a batch compute what it would alone (tests/test_backbones.py checks every backbone, exactly).
On a GPU in fp16/bf16 the kernels chosen for a [B, S] batch round differently from [1, S], so
a greedy answer can differ after a near-tie; ``generation_batch_size: 1`` restores the batch-1
answers (docs/throughput.md).

    from dyto.models.batching import length_groups, padding_tokens
    groups = length_groups([120, 40, 118, 42], size=2)       # [[1, 3], [0, 2]]
    padding_tokens([120, 40, 118, 42], groups)               # 4 (input order would pad 156)

A group's time is split into prefill and decoding by noting when its first logits exist
(``FirstTokenTimer``), so the prefill is not run twice to be timed.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from dyto.models.rope import rope_fixed_under_limit

__all__ = ["AUTO_MEMORY_SHARE", "BATCH_ORDERS", "alone_past_limit", "length_groups", "padding_tokens",
           "kv_cache_bytes_per_token", "memory_groups", "kv_memory_bytes", "plan_groups", "FirstTokenTimer",
           "generate_in_groups"]

# share of the memory beside the weights the KV caches of one generation group may take; the rest
# is headroom for the prefill's activations, the logits and the allocator's fragmentation
AUTO_MEMORY_SHARE = 0.5
BATCH_ORDERS = ("length", "input")  # length: sort by prompt length before cutting groups; input: as given


def length_groups(lengths: list[int], size: int | None, order: str = "length") -> list[list[int]]:
    """Indices of ``lengths`` cut into groups of at most ``size`` (None: one group of all).

    ``order="length"`` cuts the indices sorted by length (stable, so equal lengths keep input
    order); ``"input"`` cuts them as given (the pre-throughput behaviour). Inside a group the
    indices stay in input order, so one group of everything is exactly the old single call.
    """
    if order not in BATCH_ORDERS:
        raise ValueError(f"unknown batch_order {order!r}; expected one of {BATCH_ORDERS}")
    if size is not None and size < 1:
        raise ValueError(f"generation group size must be >= 1, got {size}")
    indices = list(range(len(lengths)))
    if order == "length":
        indices.sort(key=lambda i: lengths[i])
    size = size or max(len(indices), 1)
    return [sorted(indices[start : start + size]) for start in range(0, len(indices), size)]


def alone_past_limit(lengths: list[int], new_tokens: int, limit: int | None) -> tuple[list[int], list[int]]:
    """(indices that may share a group, indices to generate alone), both in input order.

    With dynamic RoPE (``limit``: its position limit, :func:`dyto.models.rope.dynamic_rope_limit`)
    the frequencies of a whole batch follow its longest row once that passes the limit, so a
    sequence whose prompt + ``new_tokens`` can pass it is generated alone; the rest never change
    the frequencies and batch freely. ``limit=None`` (no dynamic RoPE): everything may share.
    """
    passes = [limit is not None and n + new_tokens > limit for n in lengths]
    return [i for i, p in enumerate(passes) if not p], [i for i, p in enumerate(passes) if p]


def padding_tokens(lengths: list[int], groups: list[list[int]]) -> int:
    """Left-padding rows generation will process: sum over groups of (longest - each length)."""
    total = 0
    for group in groups:
        longest = max(lengths[i] for i in group)
        total += sum(longest - lengths[i] for i in group)
    return total


def kv_cache_bytes_per_token(config, dtype: torch.dtype) -> int:
    """KV-cache bytes one token of one sequence takes: 2 (K and V) x layers x kv heads x head dim
    x bytes per element, from a model's config (its text config for a vision-language model)."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.finfo(dtype).bits // 8


def memory_groups(lengths: list[int], new_tokens: int, bytes_per_token: int, budget_bytes: float,
                  cap: int | None = None, order: str = "length") -> list[list[int]]:
    """Groups whose KV caches fit ``budget_bytes``: ``len(group) x (longest prompt in it +
    new_tokens) x bytes_per_token <= budget``, at least one sequence per group, at most ``cap``.
    Filled shortest first (``order="length"``) or in input order. Inside a group, indices are in
    input order."""
    if order not in BATCH_ORDERS:
        raise ValueError(f"unknown batch_order {order!r}; expected one of {BATCH_ORDERS}")
    indices = list(range(len(lengths)))
    if order == "length":
        indices.sort(key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in indices:
        trial = len(current) + 1
        longest = max([lengths[j] for j in current] + [lengths[i]])
        fits = trial * (longest + new_tokens) * bytes_per_token <= budget_bytes
        if current and (not fits or (cap is not None and trial > cap)):
            groups.append(sorted(current))
            current = []
        current.append(i)
    if current:
        groups.append(sorted(current))
    return groups


def kv_memory_bytes(device: torch.device, model: torch.nn.Module) -> float | None:
    """Memory on ``device`` left beside the model's weights (CUDA: the device's total memory minus
    the parameters' bytes); None elsewhere (no limit to size groups by).

    Deliberately not the *free* memory of the moment: that changes between runs (other
    processes, the allocator's cache), and groups, hence answers, must not. This depends only on
    the GPU model and the checkpoint, so a rerun on the same kind of GPU forms the same groups."""
    if device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return float(max(total - weights, 0))


def plan_groups(lengths: list[int], size: int | str | None, order: str, backbone, new_tokens: int, *,
                cache_extra: int = 0, rope_limit: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` per ``generate`` call for ``generation_batch_size`` = ``size``.

    An int or None: :func:`length_groups`. ``"auto"``: :func:`memory_groups` with
    ``AUTO_MEMORY_SHARE`` of the memory beside ``backbone.model``'s weights on ``backbone.device``
    for KV caches in ``backbone.dtype`` of prompt + ``new_tokens`` + ``cache_extra``; where that
    memory is unknown (not CUDA), one group of all (as None). Sequences that can pass the dynamic-
    RoPE ``rope_limit`` (:func:`alone_past_limit`) come after those groups, one per group.
    """
    shared, alone = alone_past_limit(lengths, new_tokens, rope_limit)
    kept = [lengths[i] for i in shared]
    if size == "auto":
        free = kv_memory_bytes(backbone.device, backbone.model)
        if free is not None:
            per_token = kv_cache_bytes_per_token(backbone.model.config, backbone.dtype)
            groups = memory_groups(kept, new_tokens + cache_extra, per_token, AUTO_MEMORY_SHARE * free, order=order)
        else:
            groups = length_groups(kept, None, order)
    else:
        groups = length_groups(kept, size, order)
    return [[shared[j] for j in g] for g in groups] + [[i] for i in alone]


class FirstTokenTimer(LogitsProcessor):
    """Notes when the first logits exist, i.e. when the prefill forward pass has finished.

    It returns the scores unchanged, so greedy decoding is unaffected; splitting ``generate``
    at this moment measures prefill and decoding without running the prefill twice.
    """

    def __init__(self, sync):
        self.sync, self.first = sync, None

    def __call__(self, input_ids, scores):
        if self.first is None:
            self.sync()
            self.first = time.perf_counter()
        return scores


def generate_in_groups(backbone, sequences: list, groups: list[list[int]], config_for: Callable[[list], GenerationConfig],
                       sync: Callable[[], None], generate: Callable | None = None) -> list[tuple[str, float, float]]:
    """(stripped text, prefill ms, generate ms) per input of ``sequences`` (``LLMInput``), in input order.

    One ``backbone.generate`` call per group of ``groups``, with the config ``config_for(group)``;
    ``sync`` waits for the device before each clock reading. A group's prefill time is shared in
    proportion to sequence length, its decoding time equally. ``generate(group, config, processors)``
    replaces ``backbone.generate`` (an inner stage's loop). A group whose positions stay under the
    dynamic-RoPE limit decodes with the frequencies fixed (:func:`rope_fixed_under_limit`: the same
    answers, one compiled graph per step).
    """
    generate = generate or backbone.generate
    out: list[tuple[str, float, float] | None] = [None] * len(sequences)
    for indices in groups:
        group = [sequences[i] for i in indices]
        config = config_for(group)
        timer = FirstTokenTimer(sync)
        sync()
        t0 = time.perf_counter()
        with rope_fixed_under_limit(backbone.model, max(s.span for s in group) + config.max_new_tokens):
            texts = generate(group, config, LogitsProcessorList([timer]))
        sync()
        t1 = time.perf_counter()
        prefill, decode = (timer.first - t0) * 1e3, (t1 - timer.first) * 1e3
        total = sum(s.length for s in group)
        for i, t, s in zip(indices, texts, group):
            out[i] = (t.strip(), prefill * s.length / total, decode / len(group))
    return out
