"""DyCoke's temporal token merging (TTM), stage 1 of DyCoke (Tao et al., CVPR 2025, arXiv 2411.15024).

Upstream: KD-TAO/DyCoke @ dd74634, ``llava/model/llava_arch.py`` ``dycole_ttm`` (lines 35-91;
its frame-pair index was fixed in commit 35cc532, March 2025: ``similarities[i // 2]``).

Frames are taken in windows of four (paper §3.2, K = 4). In each window the first frame is kept
whole; frame 1 is compared with frame 0, frame 2 with frame 0 and frame 3 with frame 2, token by
token at the same grid cell (cosine similarity), and keeps only the ``1 - prune_ratio`` of its
tokens that are *least* similar to that reference: a token that repeats the reference is
"merged" into it (dropped, the reference carries it). As in the public code the window pass runs
for windows starting below T - 4 only, so frame 2 of the last window is kept whole too, and the
similarities are computed as there, in the features' dtype: ``cosine_similarity`` of the
L2-normalised tokens for the pairs (i, i+1), of the raw tokens for frame i+2 against frame i.

Left out / changed (say so in comparisons):
* stage 2, the dynamic KV-cache pruning inside the LLM at decoding time, is not a visual-token
  reducer: this is TTM alone (the paper's "DyCoke w/o KV" ablation); stage 2 is the inner stage
  ``dycoke_kv`` (dyto.models.inner), the whole method configs/reducers/dycoke_full.yaml;
* an odd last frame, which the public code drops silently, is kept whole here;
* ``target_tokens`` / ``retention`` (matched budgets) are this project's; TTM cannot go below
  its whole frames (T/4 + 1 of T at T divisible by 4: 28% of T*N at 32 frames, 31% at 16).

Order: frames in time order; a pruned frame's tokens in the public code's order (ascending
similarity, ``topk(largest=False)``).
Run: ``build_reducer("dycoke")(features [T, N, D], grid)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dyto.errors import check

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)

__all__ = ["DyCokeReducer", "dycoke_references", "ttm_floor"]


def dycoke_references(num_frames: int) -> list[int | None]:
    """Reference frame of every frame (None: kept whole), windows of four as the public code."""
    refs: list[int | None] = [None] * num_frames
    for i in range(0, num_frames - 1, 2):          # pairs (i, i+1): i+1 against i
        refs[i + 1] = i
    for i in range(0, num_frames - 4, 4):          # frame i+2 against frame i
        refs[i + 2] = i
    return refs


def ttm_floor(num_frames: int) -> tuple[int, int]:
    """(frames TTM keeps whole, frames it compares): the fewest tokens it can emit are
    ``whole * N + compared`` (one per compared frame)."""
    refs = dycoke_references(num_frames)
    whole = sum(r is None for r in refs)
    return whole, num_frames - whole


@register_reducer("dycoke")
class DyCokeReducer(TokenReducer):
    """DyCoke TTM (stage 1): drop the tokens of a frame that repeat its reference frame.

    Args:
        num_frames: frames sampled (paper: 32 for LLaVA-OneVision, Table 1 setting).
        prune_ratio: share of a compared frame's tokens removed (0.7, the public code's
            ``merging_ratio`` default; paper §4.1 prunes TTM at this rate).
        target_tokens / retention: matched budget (``TokenReducer``). Whole frames stay whole;
            the compared frames share ``target - whole * N`` (earliest get one more), so the
            count is **exact** for ``whole*N + compared <= target <= T*N``; below that a
            ValueError (TTM cannot go lower without its in-LLM stage).
    """

    exact_budget = True
    assigns = True

    def __init__(self, num_frames: int = 32, prune_ratio: float = 0.7,
                 target_tokens: int | None = None, retention: float | None = None):
        check("num_frames", num_frames, ">=1")
        check("prune_ratio", prune_ratio, "[0,1)")
        check_budget(target_tokens, retention)
        self.num_frames, self.prune_ratio = num_frames, prune_ratio
        self.target_tokens, self.retention = target_tokens, retention

    def _shares(self, t: int, n: int) -> tuple[list[int | None], list[int]]:
        """(reference per frame, tokens kept per compared frame in time order)."""
        refs = dycoke_references(t)
        compared = ttm_floor(t)[1]
        target = self.target_for(t, n)
        if target is None:
            return refs, [int((1 - self.prune_ratio) * n)] * compared
        whole = (t - compared) * n
        rest = target - whole
        if rest < compared:
            raise ValueError(f"dycoke: a target of {target} tokens is below TTM's floor of "
                             f"{whole + compared} ({t - compared} whole frames of {n} tokens "
                             "plus one per compared frame); TTM alone cannot reach it")
        if compared == 0:                    # a single frame: nothing to compare, kept whole
            return refs, []
        per, extra = divmod(rest, compared)
        if per >= n:
            return refs, [n] * compared
        return refs, [per + 1] * extra + [per] * (compared - extra)

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        n = grid[0] * grid[1]
        refs, shares = self._shares(num_frames, n)
        return sum(r is None for r in refs) * n + sum(shares)

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        refs, shares = self._shares(t, n)
        compared = [f for f, r in enumerate(refs) if r is not None]
        keep: dict[int, Tensor] = {}
        for f, k in zip(compared, shares):                              # [N] -> k least similar
            ref, cur = features[refs[f]], features[f]
            if f - refs[f] == 1:                                        # a pair: unit tokens, as upstream
                ref, cur = F.normalize(ref, p=2, dim=1), F.normalize(cur, p=2, dim=1)
            keep[f] = F.cosine_similarity(ref, cur, dim=1).topk(k, largest=False).indices
        rows, positions, per_frame = [], [], []
        all_cells = torch.arange(n, device=features.device)
        for f in range(t):
            cells = keep.get(f, all_cells)
            rows.append(f * n + cells)
            positions.append(cell_positions(torch.tensor(f, device=features.device), cells, grid[1]))
            per_frame.append(len(cells))
        kept = [f for f in range(t) if per_frame[f] > 0]
        return Reduction(
            tokens=features.reshape(t * n, d).index_select(0, torch.cat(rows)),  # one copy
            frames_kept=kept,
            tokens_per_frame=[per_frame[f] for f in kept],
            info={"references": refs},
            positions=torch.cat(positions),
            input_frames=t,
            assignment=Assignment.select(torch.cat(rows)),
        )
