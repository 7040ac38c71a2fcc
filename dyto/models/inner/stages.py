"""The four shipped inner-LLM stages, each with its official code's defaults.

Official repositories (commits the fixtures in tests/fixtures/inner/ were produced from; see its
PROVENANCE.md):

* FastV, pkunlp-icler/FastV @ d165972, ``src/FastV/llava-hf/transformers/src/transformers/models/
  llama/modeling_llama.py`` (the KV-cache version, ``fastv_forward``) L1038-1058: at layer K the
  last token's attention of layer K-1 (L1105: ``output_attentions`` at K-1), mean over heads, keeps
  ``round(V * (1 - R))`` visual tokens by ``topk``, sorted, with their original position ids.
  K = 2, R = 50%: README L122-123 and L196 ("with K=2 and R=50%" for video).
* DyCoke's stage 2, KD-TAO/DyCoke @ dd74634, ``llava/model/language_model/modeling_qwen2.py``
  ``PrunableDynamicCache.dycoke_pruning`` L97-115 / ``update_cache`` L76-95, called at L1141 on
  every decoding step (never in the prefill): the current token's attention at layer L-1, mean
  over heads; when its cosine similarity to the previous step's is below 0.9 (the first step
  compares with nothing: 0), layers >= L read the top ``int(V * (1 - P))`` visual entries (plus
  every text entry) at this step; otherwise, as the code does (``kv_cache`` is reset at L1139),
  they read the whole cache. The cache itself keeps every entry. L = 3, P = 0.7: README L51.
* PruneVid's question-guided pruning, Visual-AI/PruneVid @ b12600c, ``models/pllava/llama.py``
  L1417/L1457 and ``models/pllava/elastic_cache.py`` ``VTPWindowCache`` L120-198: the attention of
  layer M itself from every token after the video (L163) to the video tokens, max over heads,
  then over those queries (L125); per static block and per frame's dynamic block the top
  ``int(n * alpha)`` tokens (L136, L142); the KV cache of layers 0..M is cut to match (L183) and
  layers > M run on the kept tokens. M = 10, alpha = 0.4: README L113-114.
* HoliTom's inner merging, cokeshao/HoliTom @ e9b2972, ``holitom/modeling_qwen2.py`` L146-204:
  FastV's selection at layer K, then every dropped token, in ascending order, is averaged into
  the kept token most cosine-similar to it (hidden states entering layer K):
  ``h[dst] = (h[dst] + h[src]) / 2`` (L181, sequential). K = 18, R = 0.5: the paper's scripts
  (``scripts/eval_ov-7b_holitom.sh`` L2; the code's fallback is K = 3, L121).

Changed everywhere: attention is computed in float32 from the layer's own queries and keys (the
official code takes the eager attention in the model dtype); DyCoke's similarity memory starts
afresh for every generation (the official ``DycokeConfigs`` carries it from one question to the
next, so an answer would depend on the question before it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dyto.errors import ConfigError
from dyto.models.inner.base import InnerStage, Keep, RowView, register_inner_stage

__all__ = ["FastVStage", "DyCokeKVStage", "PruneVidLLMStage", "HoliTomInnerStage", "fastv_keep", "holitom_merge"]


def _ratio(key: str, value: float, closed_top: bool = False) -> float:
    if not (0.0 <= value <= 1.0 if closed_top else 0.0 <= value < 1.0):
        raise ConfigError(f"model.inner_stage.init_args.{key}", value, "[0, 1]" if closed_top else "[0, 1)")
    return float(value)


def fastv_keep(scores: Tensor, ratio: float) -> Tensor:
    """FastV's rule on the head-averaged scores ``[V]``: the ``round(V * (1 - ratio))`` largest, ascending."""
    return scores.topk(round(scores.shape[0] * (1 - ratio))).indices.sort().values


@register_inner_stage("fastv")
class FastVStage(InnerStage):
    """FastV (Chen et al., ECCV 2024, arXiv 2403.06764): drop the visual tokens the last prompt token
    attends to least at layer ``layer - 1``; layers from ``layer`` on run without them.

    Args:
        layer: K, the first layer without the dropped tokens (2).
        ratio: R, the share of visual tokens dropped (0.5).
    """

    keep_all = {"ratio": 0.0}

    def __init__(self, layer: int = 2, ratio: float = 0.5):
        self.layer, self.ratio = int(layer), _ratio("ratio", ratio)

    def select(self, view: RowView) -> Keep:
        return Keep(fastv_keep(view.attention[:, -1].mean(dim=0), self.ratio))           # [H, 1, V] -> [V]

    def kept(self, visual: int, blocks: list[int] | None = None) -> int:
        return round(visual * (1 - self.ratio))

    def params(self) -> dict:
        return {"layer": self.layer, "ratio": self.ratio}


def holitom_merge(hidden: Tensor, keep: Tensor) -> Tensor:
    """HoliTom's inner merge on one sequence's visual hidden states ``[V, D]`` with kept indices
    ``keep [k]`` in FastV's topk order: each dropped token, ascending, is averaged into its most
    cosine-similar kept token (similarities of the unmerged states). Returns ``[V, D]``."""
    out = hidden.clone()
    dropped = torch.ones(hidden.shape[0], dtype=torch.bool, device=hidden.device)
    dropped[keep] = False
    dropped = torch.nonzero(dropped).flatten()
    if len(dropped) == 0 or len(keep) == 0:
        return out
    src, dst = hidden[dropped], hidden[keep]
    sim = (src @ dst.T) / (src.norm(dim=-1, keepdim=True) * dst.norm(dim=-1, keepdim=True).T)
    target = keep[sim.max(dim=-1).indices]
    for s, t in zip(dropped.tolist(), target.tolist()):                  # sequential, as the official loop
        out[t] = (out[t] + hidden[s]) / 2
    return out


@register_inner_stage("holitom_inner")
class HoliTomInnerStage(InnerStage):
    """HoliTom's inner-LLM merging (Shao et al., NeurIPS 2025, arXiv 2505.21334): FastV's selection at
    layer ``layer``, each dropped token averaged into its most similar kept one (module docstring).

    Args:
        layer: K (18, the paper's scripts for 28-layer Qwen2-7B).
        ratio: R, the share of visual tokens merged away (0.5).
    """

    keep_all = {"ratio": 0.0}

    def __init__(self, layer: int = 18, ratio: float = 0.5):
        self.layer, self.ratio = int(layer), _ratio("ratio", ratio)

    def select(self, view: RowView) -> Keep:
        scores = view.attention[:, -1].mean(dim=0)
        order = scores.topk(round(scores.shape[0] * (1 - self.ratio))).indices      # topk order (ties, as official)
        merged = holitom_merge(view.hidden.float(), order).to(view.hidden.dtype)
        keep = order.sort().values
        return Keep(keep, merged[keep])

    def kept(self, visual: int, blocks: list[int] | None = None) -> int:
        return round(visual * (1 - self.ratio))

    def params(self) -> dict:
        return {"layer": self.layer, "ratio": self.ratio}


@register_inner_stage("prunevid_llm")
class PruneVidLLMStage(InnerStage):
    """PruneVid's question-guided pruning (Huang et al., ACL 2025 Findings, arXiv 2412.16117, §3.3):
    at layer ``layer`` the attention of every token after the video, max over heads and queries;
    each visual block (the outer reducer's ``tokens_per_frame``: PruneVid's static block of a
    segment and each frame's dynamic block) keeps its top ``int(n * alpha)`` tokens; every layer's
    KV cache is cut to them and layers after ``layer`` run on them.

    Args:
        layer: M (10).
        alpha: the share of each block kept (0.4).
    """

    queries = "after_visual"
    cut_earlier = True
    keep_all = {"alpha": 1.0}

    def __init__(self, layer: int = 10, alpha: float = 0.4):
        self.layer, self.alpha = int(layer), _ratio("alpha", alpha, closed_top=True)

    @property
    def attention_layer(self) -> int:
        return self.layer

    @property
    def prune_layer(self) -> int:
        return self.layer + 1

    def select(self, view: RowView) -> Keep:
        scores = view.attention.max(dim=0).values.max(dim=0).values                      # [H, Q, V] -> [V]
        keep, start = [], 0
        for n in view.blocks:
            keep.append(scores[start:start + n].topk(int(n * self.alpha)).indices + start)
            start += n
        return Keep(torch.cat(keep).sort().values)

    def kept(self, visual: int, blocks: list[int] | None = None) -> int:
        return sum(int(n * self.alpha) for n in (blocks or [visual]))

    def params(self) -> dict:
        return {"layer": self.layer, "alpha": self.alpha}


@register_inner_stage("dycoke_kv")
class DyCokeKVStage(InnerStage):
    """DyCoke's dynamic KV-cache pruning (Tao et al., CVPR 2025, arXiv 2411.15024, stage 2): while
    decoding, layers from ``layer`` on read only the visual KV entries the current token attends to
    most at layer ``layer - 1`` (module docstring: when attention changed, else all of them).

    Args:
        layer: L (3).
        ratio: P, the share of visual entries left out (0.7).
        similarity: the cosine similarity below which a step prunes (0.9).
    """

    phase = "decode"
    keep_all = {"ratio": 0.0}

    def __init__(self, layer: int = 3, ratio: float = 0.7, similarity: float = 0.9):
        self.layer, self.ratio, self.similarity = int(layer), _ratio("ratio", ratio), float(similarity)

    def select_step(self, view: RowView) -> Tensor | None:
        scores = view.attention[:, -1].mean(dim=0)                                        # [V]
        previous = view.state.get("previous")
        similar = 0.0 if previous is None or previous.shape != scores.shape else \
            float(F.cosine_similarity(scores, previous, dim=0))
        view.state["previous"] = scores
        if similar >= self.similarity:
            return None
        return scores.topk(int(scores.shape[0] * (1 - self.ratio)), sorted=False).indices.sort().values

    def kept(self, visual: int, blocks: list[int] | None = None) -> int:
        return visual                                                                      # the prefill is untouched

    def params(self) -> dict:
        return {"layer": self.layer, "ratio": self.ratio, "similarity": self.similarity}
