"""Dynamic NTK RoPE scaling as the reference configures it (docs/method.md §3, ROPE_SCALING_FACTOR),
and the per-question handling of its state that batching and repeatability need.

Hugging Face's dynamic RoPE rescales the frequencies from ``max(position_ids) + 1`` of the whole
forward pass once that passes the checkpoint's ``max_position_embeddings`` (4096 for Vicuna-7B)
and keeps the largest length seen across ``generate`` calls. Two consequences, both measured on
the tiny model with 64 positions (tests/test_throughput.py):

- in a batch, a row's frequencies depend on the LONGEST row, so a sequence that passes the limit
  is answered differently batched than alone. :func:`dynamic_rope_limit` tells the pipeline
  which sequences to generate alone (``VideoQA.generation_groups``);
- a question past the limit is answered with the frequencies of the longest question seen
  before it in the process, so its answer depends on the order, the resume point and the number
  of ranks. :func:`reset_dynamic_rope` before every ``generate`` makes each answer what that
  question gets first in a fresh process (``rope_state: per_question``, the default).

For DyTo's at most 3680 visual tokens plus a short prompt and 128 new tokens, sequences stay
under 4096 positions and none of this changes an answer; long prompts (EgoSchema's five long
options), larger budgets and ``concat`` pass it.

:func:`rope_fixed_under_limit` (new in the GPU work) uses that: for a ``generate`` call whose
positions cannot reach the limit, the frequencies are decided before the call, so the rotary
embeddings run without transformers' per-forward update, whose branch on ``max(position_ids)``
splits a compiled decoding step into six graphs (one without it).

    from dyto.models.rope import dynamic_rope_limit, reset_dynamic_rope, rope_fixed_under_limit
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from types import MethodType
from typing import Iterator

import torch

__all__ = ["ROPE_STATES", "apply_rope_scaling", "dynamic_rope_limit", "reset_dynamic_rope", "rope_fixed_under_limit",
           "rope_is_fixed"]

# per_question: reset before every generate call; carried: Hugging Face's state across calls
ROPE_STATES = ("per_question", "carried")


def apply_rope_scaling(text_config, factor: float) -> None:
    """Turn on dynamic NTK RoPE scaling with ``factor`` on a (Llama) text config, in place.

    The reference sets ``rope_scaling={"type": "dynamic", "factor": 2}``; transformers 5.x spells
    it ``rope_parameters={"rope_type": "dynamic", "factor": ..., "rope_theta": ...}`` and builds the
    rotary embedding from it when the model is constructed, so this must run on the config
    *before* the model is built. The base ``max_position_embeddings`` (4096 for Vicuna-7B v1.5)
    is left alone: frequencies are rescaled only once a sequence grows past it.
    """
    params = dict(text_config.rope_parameters or {})
    theta = params.get("rope_theta", getattr(text_config, "rope_theta", None) or text_config.default_theta)
    text_config.rope_parameters = {"rope_type": "dynamic", "factor": float(factor), "rope_theta": theta}


def _dynamic_rotary_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The rotary embeddings of ``model`` that rescale dynamically (one per language model)."""
    return [m for m in model.modules()
            if isinstance(getattr(m, "rope_type", None), str) and "dynamic" in m.rope_type
            and hasattr(m, "original_inv_freq") and hasattr(m, "original_max_seq_len")]


def dynamic_rope_limit(model: torch.nn.Module) -> int | None:
    """Positions up to which dynamic RoPE leaves the frequencies alone (the checkpoint's
    ``max_position_embeddings``); None without dynamic RoPE (then any batch is safe)."""
    limits = [int(m.original_max_seq_len) for m in _dynamic_rotary_modules(model)]
    return min(limits) if limits else None


def rope_is_fixed(model: torch.nn.Module) -> bool:
    """Whether no rotary module of ``model`` runs transformers' dynamic update (none has dynamic RoPE,
    or the caller is inside :func:`rope_fixed_under_limit`): a decoding step without data-dependent branches."""
    return all("forward" in vars(m) for m in _dynamic_rotary_modules(model))


def reset_dynamic_rope(model: torch.nn.Module) -> None:
    """Put every dynamic rotary embedding of ``model`` back to the checkpoint's frequencies, as in
    a fresh process (what transformers itself does once a sequence under the limit arrives).

    In place: the buffer keeps its address, so a compiled decoding step (CUDA graphs replay from
    fixed addresses) is neither re-recorded nor recompiled for every question."""
    for m in _dynamic_rotary_modules(model):
        m.inv_freq.copy_(m.original_inv_freq)  # copy_ moves across devices; a no-op when they alias
        m.max_seq_len_cached = m.original_max_seq_len


@contextmanager
def rope_fixed_under_limit(model: torch.nn.Module, positions: int) -> Iterator[bool]:
    """Within the block, dynamic rotary embeddings run as plain RoPE at the checkpoint's
    frequencies, provided a ``generate`` call needs at most ``positions`` positions (the furthest
    a prompt reaches, ``LLMInput.span``, + ``max_new_tokens``) and that stays within the limit;
    yields whether it did.

    Why the answers cannot change: under the limit transformers' update can only do one thing,
    put the checkpoint's frequencies back at the first forward pass (when a longer sequence left
    others), after which every update is a no-op. Resetting before the call does the same, so the
    update's data-dependent branch (a graph break in a compiled step) need not run at all. Past
    the limit (or without dynamic RoPE) nothing is changed and the update runs as usual.
    """
    modules = _dynamic_rotary_modules(model)
    limit = dynamic_rope_limit(model)
    if not modules or positions > limit:
        yield False
        return
    reset_dynamic_rope(model)
    for m in modules:  # the forward without transformers' dynamic_rope_update decorator
        m.forward = MethodType(inspect.unwrap(type(m).forward), m)
    try:
        yield True
    finally:
        for m in modules:
            del m.forward
