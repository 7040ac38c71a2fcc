"""V-CAST (Lin et al., 2026, arXiv 2603.27650): curvature-aware spatio-temporal pruning.

The official code (``xinyouu/V-CAST`` @ c235ef3, ``compressor/v_cast/modeling_qwen3_vl_v_cast.py``;
``compressor/v_cast/main.py`` line 12 announces ``retain_ratio=0.25 budget=curvature/softmax@0.7
score=hybrid``) prunes Qwen3-VL's merged vision tokens per temporal patch, after the vision tower:

1. **Temporal budget from curvature** (lines 33-45, 131-145): frame descriptor r_t = the unit mean
   token of frame t; curvature c_t = 1 - cos(r_t - r_{t-1}, r_{t+1} - r_t), 1 at both ends; weights
   softmax(c / 0.7); the budget ``round(T * N * retain_ratio)`` (at least ``T * min_k``, min_k = 1)
   is split by those weights (lines 48-111: floors, then the largest fractional parts, one token
   at a time, no frame above N).
2. **Coordinate-preserving spatial pruning** (lines 151-171): in frame t, the k_t tokens with the
   highest ``(1 - cos(token, r_t)) + minmax(|token|)`` are kept, in raster order. Nothing is
   merged: kept tokens keep their (t, h, w) ids and DeepStack features (the official code indexes
   the three DeepStack tensors with the same ``topk_idx``).

A clip of one frame is not compressed (line 230). Unchanged here; the matched-budget knobs set the
budget instead of ``round(T * N * retain_ratio)``. Run: ``build_reducer("vcast")(features [T, N, D], grid)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)

__all__ = ["VCastReducer", "curvature", "allocate_by_weight"]

DEFAULT_RETAIN_RATIO = 0.25   # modeling_qwen3_vl_v_cast.py line 14
DEFAULT_MIN_K = 1             # line 15
DEFAULT_BUDGET_TEMP = 0.7     # line 16


def curvature(reps: Tensor) -> Tensor:
    """[T, D] unit frame descriptors -> [T]: 1 - cos of the turn at each inner frame, 1 at the ends."""
    t = reps.shape[0]
    if t <= 1:
        return torch.ones(t, device=reps.device)
    into, out = reps[1:-1] - reps[:-2], reps[2:] - reps[1:-1]
    turn = 1.0 - F.cosine_similarity(into, out, dim=-1, eps=1e-6)
    ones = torch.ones(1, device=reps.device, dtype=turn.dtype)
    return torch.cat([ones, turn, ones])


def allocate_by_weight(weights: Tensor, total: int, min_k: int, max_k: int) -> list[int]:
    """Split ``total`` tokens over frames by ``weights`` [T], each in [min_k, max_k] (lines 48-111):
    ``min_k`` each (none if they do not fit), then ``floor`` of the weighted rest, then one token
    at a time to the largest fractional part (ties: the earliest) until ``total`` is reached."""
    t = weights.shape[0]
    total = max(0, min(int(total), t * max_k))
    min_k = max(0, min(int(min_k), max_k))
    base = min_k if total >= t * min_k else 0
    alloc = torch.full((t,), base, dtype=torch.long, device=weights.device)
    left = total - base * t
    if left <= 0:
        return alloc.tolist()
    w = weights.float().clamp_min(0.0)
    if float(w.sum()) <= 0.0:
        w = torch.ones_like(w)
    w = w / w.sum().clamp_min(1e-6)
    raw = w * float(left)
    alloc = alloc + torch.minimum(torch.floor(raw).long(), torch.full_like(alloc, max(max_k - base, 0)))
    left = total - int(alloc.sum())
    frac = (raw - torch.floor(raw)).masked_fill(alloc >= max_k, -1.0)
    for _ in range(left):
        i = int(torch.argmax(frac))
        if float(frac[i]) < 0:
            break
        alloc[i] += 1
        if alloc[i] >= max_k:
            frac[i] = -1.0
    return alloc.tolist()


@register_reducer("vcast")
class VCastReducer(TokenReducer):
    """V-CAST: a curvature-weighted token budget per frame, the most distinctive tokens kept.

    Args:
        num_frames: frames sampled (the official Qwen3-VL script: 64, ``max_num_frames=64``).
        retain_ratio: share of the T*N tokens kept (0.25, the public default).
        min_k: tokens every frame keeps at least (1).
        budget_temp: softmax temperature of the curvature weights (0.7).
        positions: "input" (default, V-CAST's coordinate preservation: the official Qwen3-VL code
            keeps every kept token's and the text's position ids from the full sequence, which
            ``Reduction.keep_input_positions`` asks every backbone for) or "compact".
        target_tokens / retention: matched budgets; either replaces ``round(T*N*retain_ratio)``.

    Budgets: **exact** for ``T*min_k <= target <= T*N`` (the allocation hands out every token); a
    target below ``T*min_k`` raises ValueError (the official code would raise it to ``T*min_k``).
    One frame: every token (not compressed, as upstream).
    """

    exact_budget = True
    assigns = True

    def __init__(self, num_frames: int = 64, retain_ratio: float = DEFAULT_RETAIN_RATIO, min_k: int = DEFAULT_MIN_K,
                 budget_temp: float = DEFAULT_BUDGET_TEMP, positions: str = "input", target_tokens: int | None = None,
                 retention: float | None = None):
        if num_frames < 1 or min_k < 0:
            raise ValueError(f"num_frames must be >= 1 and min_k >= 0, got {num_frames}, {min_k}")
        if not 0.0 < retain_ratio <= 1.0 or budget_temp <= 0:
            raise ValueError(f"retain_ratio must be in (0, 1] and budget_temp > 0, got {retain_ratio}, {budget_temp}")
        if positions not in ("input", "compact"):
            raise ValueError(f"positions must be 'input' or 'compact', got {positions!r}")
        check_budget(target_tokens, retention)
        self.num_frames, self.retain_ratio, self.min_k, self.budget_temp = num_frames, retain_ratio, min_k, budget_temp
        self.positions = positions
        self.target_tokens, self.retention = target_tokens, retention

    def _budget(self, t: int, n: int) -> int:
        target = self.target_for(t, n)
        min_k = min(self.min_k, n)
        if target is None:
            total = max(1, min(t * n, round(float(t * n) * float(self.retain_ratio))))
            return max(total, t * min_k) if min_k > 0 else total
        if target < t * min_k:
            raise ValueError(f"vcast: a target of {target} tokens is below its floor of {t * min_k} "
                             f"({t} frames of at least {min_k} token{'s' if min_k != 1 else ''})")
        return min(target, t * n)

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        n = grid[0] * grid[1]
        return n if num_frames <= 1 else self._budget(num_frames, n)

    def __call__(self, features: Tensor, grid: tuple[int, int], cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        device = features.device
        if t <= 1:                                               # not compressed upstream
            cells = torch.arange(n, device=device)
            return Reduction(features.reshape(-1, d), [0], [n], positions=cell_positions(0, cells, grid[1]),
                             input_frames=t, assignment=Assignment.select(cells), info={"tokens_per_frame": [n]},
                             keep_input_positions=self.positions == "input")
        reps = F.normalize(features.mean(dim=1), dim=-1, eps=1e-6)               # [T, D]
        weights = torch.softmax(curvature(reps).float() / float(self.budget_temp), dim=0)
        shares = allocate_by_weight(weights, self._budget(t, n), min(self.min_k, n), n)
        kept, cells = [], []
        for f, k in enumerate(shares):
            if k <= 0:
                continue
            tokens = features[f]
            outlier = (1.0 - F.cosine_similarity(tokens, reps[f][None], dim=-1, eps=1e-6)).float()
            norm = tokens.float().norm(dim=-1)
            norm = (norm - norm.min()) / (norm.max() - norm.min() + 1e-6)
            top = torch.topk(outlier + norm, k=k, largest=True, sorted=False).indices.sort().values
            kept.append(f)
            cells.append(top)
        frames = torch.cat([torch.full((len(c),), f, device=device) for f, c in zip(kept, cells)])
        cells = torch.cat(cells)
        sources = frames * n + cells
        return Reduction(features.reshape(-1, d).index_select(0, sources), kept, [int(k) for k in shares if k > 0],
                         info={"tokens_per_frame": shares, "curvature_weights": weights},
                         positions=cell_positions(frames, cells, grid[1]), input_frames=t,
                         keep_input_positions=self.positions == "input", assignment=Assignment.select(sources))
