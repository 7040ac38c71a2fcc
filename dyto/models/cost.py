"""Prefill cost on equal terms: FLOPs from per-layer sequence lengths, the KV cache, visual tokens per layer.

New with the inner-LLM stages (:mod:`dyto.models.inner`). An outer reducer changes how many
tokens enter the LLM; an inner stage changes how many tokens each *layer* processes, so the
token count alone no longer compares methods. Every prediction record therefore carries:

* ``prefill_tflops``: the prefill's floating-point operations (2 per multiply-add) over every
  decoder layer, from the number of tokens each layer processed, plus the LM head on the last
  position (what greedy generation computes). Per layer, with ``n`` tokens and ``m`` keys::

      2 * n * D * (H*hd + 2*KVH*hd)      # q, k, v projections (grouped-query aware)
    + 2 * n * H*hd * D                   # output projection
    + 2 * 2 * n * m * H*hd               # q.k scores and the weighted sum of values
    + 2 * 3 * n * D * I                  # gated MLP (gate, up, down): Llama, Qwen2, Qwen2.5-VL

  Attention is counted dense (n x m, as FastV's FLOPs formula does), not halved for the causal
  mask. In the prefill ``m == n`` at every layer (a layer attends to the tokens it processes).
  Norms, RoPE, softmax and the embedding lookup are left out (a few per mille at 7B).
* ``kv_cache_mb``: the key/value cache held at the end of the prefill, summed over layers
  (``2 * KVH * hd`` values per token per layer, at the model's dtype), in MiB.
* ``visual_tokens_per_layer``: the visual tokens each layer processed, run-length compressed as
  ``[[count, layers], ...]`` (``[[1024, 2], [512, 26]]``: 1024 in layers 0-1, 512 in 2-27).

All arithmetic reads the model's (text) config, so it holds for full-size random weights and
the tiny models alike. ``solve_visual_tokens`` inverts the FLOPs of a whole method for
``dyto sweep --match flops``.

    from dyto.models.cost import LayerCounts, prefill_flops, record_cost
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["TextShape", "LayerCounts", "text_shape", "layer_flops", "prefill_flops", "kv_cache_bytes",
           "run_length", "expand_run_length", "record_cost", "solve_visual_tokens"]


@dataclass(frozen=True)
class TextShape:
    """What the cost arithmetic needs from a language model's config."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @property
    def kv_values_per_token(self) -> int:
        """Values one token stores in one layer's cache (keys and values)."""
        return 2 * self.kv_heads * self.head_dim


def text_shape(config) -> TextShape:
    """The language model's shape from a model config (a vision-language config's text config)."""
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    return TextShape(layers=config.num_hidden_layers, hidden=config.hidden_size, heads=heads,
                     kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                     head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                     intermediate=config.intermediate_size, vocab=config.vocab_size)


@dataclass
class LayerCounts:
    """Per decoder layer of one sequence's prefill: tokens processed, keys held at the end, visual tokens."""

    tokens: list[int]      # [layers] tokens the layer processed (= keys it attended to)
    kv: list[int]          # [layers] entries in its KV cache at the end of the prefill
    visual: list[int]      # [layers] visual tokens among ``tokens``

    @classmethod
    def uniform(cls, layers: int, length: int, visual: int) -> "LayerCounts":
        """Every layer on the whole sequence (no inner stage)."""
        return cls([length] * layers, [length] * layers, [visual] * layers)


def layer_flops(shape: TextShape, n: int, m: int | None = None) -> int:
    """FLOPs of one decoder layer for ``n`` query tokens attending to ``m`` keys (default ``n``)."""
    m = n if m is None else m
    d, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    projections = 2 * n * d * (q + 2 * kv) + 2 * n * q * d
    attention = 4 * n * m * q
    mlp = 6 * n * d * shape.intermediate
    return projections + attention + mlp


def prefill_flops(shape: TextShape, tokens: list[int]) -> int:
    """FLOPs of a prefill whose layer ``l`` processed ``tokens[l]`` tokens, plus the LM head on one position."""
    if len(tokens) != shape.layers:
        raise ValueError(f"{len(tokens)} per-layer counts for a {shape.layers}-layer model")
    return sum(layer_flops(shape, n) for n in tokens) + 2 * shape.hidden * shape.vocab


def kv_cache_bytes(shape: TextShape, kv: list[int], dtype: torch.dtype) -> int:
    """Bytes of a KV cache holding ``kv[l]`` tokens in layer ``l``."""
    return sum(kv) * shape.kv_values_per_token * torch.finfo(dtype).bits // 8


def run_length(values: list[int]) -> list[list[int]]:
    """``[512, 512, 256]`` -> ``[[512, 2], [256, 1]]``."""
    out: list[list[int]] = []
    for v in values:
        if out and out[-1][0] == v:
            out[-1][1] += 1
        else:
            out.append([int(v), 1])
    return out


def expand_run_length(pairs: list[list[int]]) -> list[int]:
    """The inverse of :func:`run_length`."""
    return [int(v) for v, n in pairs for _ in range(n)]


def record_cost(shape: TextShape, counts: list[LayerCounts], dtype: torch.dtype) -> dict:
    """The record fields for the prefills of one question (two for VCGBench consistency items):
    ``prefill_tflops`` summed (compute spent), ``kv_cache_mb`` the largest, ``visual_tokens_per_layer``
    of the first (the question's own answer)."""
    if not counts:
        return {}
    return {"prefill_tflops": sum(prefill_flops(shape, c.tokens) for c in counts) / 1e12,
            "kv_cache_mb": max(kv_cache_bytes(shape, c.kv, dtype) for c in counts) / 2**20,
            "visual_tokens_per_layer": run_length(counts[0].visual)}


def solve_visual_tokens(flops_of: Callable[[int], int], target: int, upper: int) -> int:
    """The largest visual-token count ``v`` in ``[1, upper]`` with ``flops_of(v) <= target``
    (``flops_of`` non-decreasing in ``v``); 1 when even one token costs more."""
    lo, hi = 1, upper
    if flops_of(hi) <= target:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if flops_of(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo
