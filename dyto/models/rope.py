"""Dynamic NTK RoPE scaling as the reference configures it (docs/method.md §3, ROPE_SCALING_FACTOR)."""

from __future__ import annotations


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
