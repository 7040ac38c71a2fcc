"""The inner-LLM stage interface and its registry.

An outer reducer (:mod:`dyto.reduction`) decides which visual tokens enter the language model.
An *inner stage* decides, inside the language model, which of them later layers still process:

* a **prefill stage** (FastV, PruneVid's question-guided pruning, HoliTom's inner merging) reads
  the attention of one decoder layer (``attention_layer``) during the prefill and returns, per
  sequence, the visual tokens to keep (and, to merge, their new hidden states). From
  ``prune_layer`` on, the prefill runs on the shorter sequence with the kept tokens' ORIGINAL
  positions (M-RoPE (t, h, w) ids on Qwen2.5-VL); decoding continues the original positions.
  ``cut_earlier`` also cuts the KV cache of the layers before ``prune_layer`` (PruneVid).
* a **decode stage** (DyCoke's dynamic KV pruning) reads, at every decoding step, the current
  token's attention at ``attention_layer`` and names the visual KV entries that layers from
  ``prune_layer`` on read at that step (None: all of them).

The loop that runs them over any backbone's Hugging Face decoder layers is
:mod:`dyto.models.inner.loop`; a stage only sees one sequence at a time, padding removed
(:class:`RowView`), so per-row keep sets and batching come for free.

    from dyto.models.inner import build_inner_stage
    stage = build_inner_stage("fastv", layer=2, ratio=0.5)
    VideoQA("llava_next", reducer=..., inner_stage=stage)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from dyto.errors import ConfigError
from dyto.registry import registering

__all__ = ["InnerStage", "RowView", "Keep", "INNER_STAGES", "PHASES", "QUERIES", "register_inner_stage",
           "build_inner_stage", "list_inner_stages"]

PHASES = ("prefill", "decode")
QUERIES = ("last", "after_visual")  # the last prompt token; every token after the visual span


@dataclass
class RowView:
    """What a stage sees of one sequence at its layer, padding removed."""

    attention: Tensor            # [H, Q, V] float32: softmax attention of the query rows to the V visual tokens
    hidden: Tensor | None        # [V, D] visual hidden states entering prune_layer (prefill), None while decoding
    blocks: list[int]            # visual tokens per block (the reducer's tokens_per_frame), sum == V
    state: dict = field(default_factory=dict)  # per-sequence memory across decoding steps (decode stages)


@dataclass
class Keep:
    """A stage's answer for one sequence."""

    index: Tensor                # [k] ascending indices into the V visual tokens
    hidden: Tensor | None = None  # [k, D] new hidden states of the kept tokens (merging); None = unchanged


INNER_STAGES: dict[str, type["InnerStage"]] = {}


register_inner_stage = registering(INNER_STAGES, "inner stage")  # @register_inner_stage("fastv")


# modules whose stages register on import (a stage elsewhere works by class_path at once)
STAGE_MODULES = ("dyto.models.inner.stages",)


def _load_stages() -> None:
    for module in STAGE_MODULES:
        importlib.import_module(module)


def list_inner_stages() -> list[str]:
    _load_stages()
    return sorted(INNER_STAGES)


def build_inner_stage(name: str, **params) -> "InnerStage":
    """``build_inner_stage("fastv", layer=2, ratio=0.5)``; unknown names list the known ones."""
    _load_stages()
    if name not in INNER_STAGES:
        raise ConfigError("model.inner_stage", name, f"one of {sorted(INNER_STAGES)}")
    return INNER_STAGES[name](**params)


class InnerStage:
    """Base class. A subclass sets ``phase``, ``queries``, ``cut_earlier`` and ``keep_all`` (the
    parameters under which it keeps every token: the equality tests use them), takes ``layer`` in
    ``__init__`` and implements ``select`` (prefill) or ``select_step`` (decode), ``kept`` and ``params``."""

    name: ClassVar[str] = "?"
    phase: ClassVar[str] = "prefill"
    queries: ClassVar[str] = "last"
    cut_earlier: ClassVar[bool] = False
    keep_all: ClassVar[dict] = {}
    layer: int

    @property
    def attention_layer(self) -> int:
        """The decoder layer whose attention the stage reads (default: the one before ``prune_layer``)."""
        return self.layer - 1

    @property
    def prune_layer(self) -> int:
        """The first decoder layer that runs on the kept tokens (decode stages: reads the pruned KV)."""
        return self.layer

    def check(self, num_layers: int) -> None:
        """Raise a ConfigError when the stage cannot run in a ``num_layers``-layer language model."""
        if self.phase == "prefill" and self.prune_layer != self.attention_layer + 1:
            raise ValueError(f"{self.name}: a prefill stage prunes right after the layer whose attention it reads")
        if not (0 <= self.attention_layer < self.prune_layer < num_layers):
            low, high = self.layer - self.attention_layer, num_layers - 1 - (self.prune_layer - self.layer)
            raise ConfigError("model.inner_stage.init_args.layer", self.layer,
                              f"{low}..{high} for this {num_layers}-layer language model",
                              "the tiny models have 2 layers: set --model.inner_stage.init_args.layer")

    def select(self, view: RowView) -> Keep:
        """Prefill: the visual tokens one sequence keeps from ``prune_layer`` on."""
        raise NotImplementedError

    def select_step(self, view: RowView) -> Tensor | None:
        """Decode: ascending indices of the visual KV entries layers >= ``prune_layer`` read at this
        step, or None for all of them."""
        raise NotImplementedError

    def kept(self, visual: int, blocks: list[int] | None = None) -> int:
        """Visual tokens left after the prefill for ``visual`` tokens in ``blocks`` (cost arithmetic)."""
        raise NotImplementedError

    def params(self) -> dict:
        raise NotImplementedError

    def config(self) -> dict:
        """``{"name": ..., **params}`` for the fingerprint and prediction records."""
        return {"name": self.name, **self.params()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"
