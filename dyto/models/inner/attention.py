"""Reading one layer's attention and restricting one layer's keys, without changing any other layer.

The loop (:mod:`dyto.models.inner.loop`) calls the model's own Hugging Face decoder layers. For
the duration of a generation it points each text attention module at ``dyto_inner``, an
attention function registered in transformers' ``AttentionInterface`` that calls the module's
configured implementation (``sdpa`` by default) with the same arguments, so a layer without a
hook computes exactly what it computes in ``model.generate``. Two hooks, set per call:

* :class:`Probe` keeps the layer's rotated queries (the rows a stage asks for) and its keys
  after the cache update; :meth:`Probe.row_attention` then computes, for one sequence, the
  softmax attention of those rows over its keys in float32 (causal, padding removed). Only
  those rows are computed: the layer's own output still comes from SDPA.
* :class:`KeyView` gathers, per sequence, the KV entries a decode stage keeps and hands the
  implementation those with a matching boolean mask (DyCoke's pruned reads; the cache keeps
  every entry, as the official ``PrunableDynamicCache`` does).

Only the attention modules' own ``config`` reference is swapped (a shallow copy naming
``dyto_inner``): masks are still built from the language model's config, and everything is put
back when the context exits.
"""

from __future__ import annotations

import copy
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

__all__ = ["NAME", "Probe", "KeyView", "hooked_attention"]

NAME = "dyto_inner"


def _inner_attention(module, query, key, value, attention_mask, **kwargs):
    hook = getattr(module, "dyto_hook", None)
    if hook is not None:
        query, key, value, attention_mask = hook(module, query, key, value, attention_mask)
    return module.dyto_impl(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(NAME, _inner_attention)


def _original_impl(attn: torch.nn.Module, name: str):
    """The attention function the module would call: the registered one, or its file's eager one."""
    eager = getattr(sys.modules[type(attn).__module__], "eager_attention_forward", None)
    return ALL_ATTENTION_FUNCTIONS.get_interface(name, eager)


@contextmanager
def hooked_attention(layers, via: str = NAME):
    """Route every decoder layer's ``self_attn`` of ``layers`` through the registered attention function
    ``via`` (default ``dyto_inner``; it finds the module's own function in ``dyto_impl``), then back."""
    saved = []
    try:
        for layer in layers:
            attn = layer.self_attn
            name = attn.config._attn_implementation
            patched = copy.copy(attn.config)
            patched._attn_implementation_internal = via
            saved.append((attn, attn.config))
            attn.dyto_impl, attn.dyto_impl_name, attn.dyto_hook = _original_impl(attn, name), name, None
            attn.config = patched
        yield
    finally:
        for attn, config in saved:
            attn.config = config
            for extra in ("dyto_impl", "dyto_impl_name", "dyto_hook"):
                if hasattr(attn, extra):
                    delattr(attn, extra)


@dataclass
class Probe:
    """Keeps the queries of one call from its query ``first`` on (``[B,H,q,hd]``) and all its keys
    (``[B,KVH,k,hd]``, the cache included). Columns are absolute: the call's queries are the last
    ones of its keys."""

    first: int
    query: Tensor | None = None
    key: Tensor | None = None
    scaling: float = 1.0
    offset: int = 0                     # absolute column of the call's first query

    def __call__(self, module, query, key, value, attention_mask):
        self.query, self.key, self.scaling = query[:, :, self.first:].detach(), key.detach(), module.scaling
        self.offset = key.shape[2] - query.shape[2]
        return query, key, value, attention_mask

    def row_attention(self, row: int, queries: Tensor, keys: Tensor) -> Tensor:
        """``[H, Q, K]`` float32 softmax attention of the query columns ``queries`` over the key columns
        ``keys`` (both absolute and ascending; ``keys`` = the row's valid entries) of batch row ``row``;
        a query at column c sees the keys at columns <= c."""
        q = self.query[row, :, queries - self.offset - self.first].float()   # [H, Q, hd]
        k = self.key[row, :, keys].float()                                   # [KVH, K, hd]
        k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)              # [H, K, hd] (repeat_kv's order)
        scores = q @ k.transpose(1, 2) * self.scaling                        # [H, Q, K]
        visible = keys[None, :] <= queries[:, None]                          # [Q, K] causal
        return scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)


@dataclass
class KeyView:
    """Per row, the KV columns a layer reads (``index [B, n]``, padded with any valid column, and
    ``valid [B, n]`` saying which entries count)."""

    index: Tensor
    valid: Tensor

    def __call__(self, module, query, key, value, attention_mask):
        b, h, _, d = key.shape
        gather = self.index[:, None, :, None].expand(b, h, -1, d)
        mask = self.valid[:, None, None, :].expand(b, 1, query.shape[2], -1)  # [B, 1, q, n] bool: True = read
        if module.dyto_impl_name == "eager":                                   # eager adds its mask
            mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
                ~mask, torch.finfo(query.dtype).min)
        elif module.dyto_impl_name != "sdpa":
            raise ValueError(f"a decode-time inner stage needs sdpa or eager attention, not {module.dyto_impl_name}")
        return query, key.gather(2, gather), value.gather(2, gather), mask
