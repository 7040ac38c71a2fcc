"""FastVID (Shen et al., NeurIPS 2025, arXiv 2503.11187): DySeg + STPrune, before the LLM.

* **DySeg** (paper §3.2): cosine similarity of adjacent frames' global features; a segment
  boundary after every frame whose similarity is below ``tau`` and after the ``c - 1`` least
  similar transitions, so there are at least ``c`` segments.
* **STPrune** (§3.3): each frame keeps ``int(N * retention)`` tokens, a share ``d`` of them
  *salient* (ATS: the top tokens by the attention they receive), the rest *contextual* (DTM):
  in each segment, anchor frames every ``p`` frames pick the densest tokens (DPC-kNN scores on
  the non-salient tokens, k = 4) as anchors, taking the segment's whole contextual share; every
  non-salient token of the segment goes to its most cosine-similar anchor, and an anchor
  becomes ``a * anchor + (1 - a) * mean(its cluster)`` with ``a = max(1 / (count + 1), alpha)``.

Changed / left out (the dyto contract carries patch features only):
* global features are the mean patch feature of each frame, not SigLIP's pooled head output;
* ATS ranks tokens by ``density.saliency_proxy`` (the attention logit a token receives from the
  mean query), not SigLIP's head attention;
* the cluster mean is taken over the raw features (the public code averages unit vectors);
* the density tie-break is deterministic (``density``), and densities are computed on the
  anchor frames only (the only ones whose scores are used);
* output in time order: each frame's salient tokens, then its anchors' contextual tokens, each
  in raster order (the public code emits all salient tokens first).

Run: ``build_reducer("fastvid", retention=0.25)(features [T, N, D], grid)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dyto.errors import check

from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import allocate, density_scores, pairwise_distances, saliency_proxy

__all__ = ["FastVIDReducer", "dyseg"]

DEFAULT_RETENTION = 0.25   # paper Table 1: FastVID at 25% of LLaVA-OneVision's video tokens


def dyseg(global_features: Tensor, c: int, tau: float) -> list[int]:
    """Segment lengths (time order) from frame features [T, D] (DySeg)."""
    t = global_features.shape[0]
    if t == 1:
        return [1]
    g = F.normalize(global_features.float(), dim=-1)
    sim = (g[:-1] * g[1:]).sum(-1)                                          # [T-1]
    cuts = set(sim.topk(min(c - 1, t - 1), largest=False).indices.tolist())
    cuts |= set(torch.nonzero(sim < tau).flatten().tolist())
    ends = sorted(cuts) + [t - 1]                                           # last frame of each
    return [end - start for start, end in zip([-1] + ends[:-1], ends)]


@register_reducer("fastvid")
class FastVIDReducer(TokenReducer):
    """FastVID's DySeg + STPrune on the patch features.

    Args:
        num_frames: frames sampled (paper: 32 for LLaVA-OneVision, §4.1).
        c: minimum number of segments (DySeg, paper default 8, §4.1 / public script).
        tau: similarity threshold for a boundary (0.9).
        d: salient (ATS) share of the kept tokens (0.4).
        p: anchor-frame step inside a segment (4).
        alpha: lower bound of the anchor's weight when merging (0.6).
        k: neighbours for the DPC-kNN density (4, public code).
        target_tokens / retention: budget. Neither set: the paper's 25% with its per-frame
            arithmetic (``int(N * 0.25)`` per frame, floors per anchor), a few tokens under
            25%. Either set: ``int(d * target / T)`` salient tokens per frame and the rest
            split over segments by length and over a segment's anchors evenly, so the count
            is **exact** unless an anchor frame runs out of tokens (then at most).
    """

    exact_budget = True

    def __init__(self, num_frames: int = 32, c: int = 8, tau: float = 0.9, d: float = 0.4,
                 p: int = 4, alpha: float = 0.6, k: int = 4, target_tokens: int | None = None,
                 retention: float | None = None):
        for key, value in (("num_frames", num_frames), ("c", c), ("p", p), ("k", k)):
            check(key, value, ">=1")
        check("d", d, "[0,1]")
        check("alpha", alpha, "[0,1]")
        check_budget(target_tokens, retention)
        self.num_frames, self.c, self.tau, self.d, self.p = num_frames, c, tau, d, p
        self.alpha, self.k = alpha, k
        self.target_tokens, self.retention = target_tokens, retention

    def _plan(self, t: int, n: int, segments: list[int]) -> tuple[int, list[list[int]]]:
        """(salient per frame, contextual tokens per anchor of each segment)."""
        anchors = [len(range(0, length, self.p)) for length in segments]
        target = self.target_for(t, n)
        if target is None:
            retained = int(n * DEFAULT_RETENTION)
            salient = int(self.d * retained)
            per_anchor = [min(n - salient, (length * (retained - salient)) // a)
                          for length, a in zip(segments, anchors)]
            return salient, [[m] * a for m, a in zip(per_anchor, anchors)]
        salient = min(n, int(self.d * target / t))
        per_segment = allocate(max(0, target - salient * t), segments, minimum=0)
        plan = []
        for total, a in zip(per_segment, anchors):
            per, extra = divmod(total, a)
            plan.append([min(n - salient, per + (i < extra)) for i in range(a)])
        return salient, plan

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        return None                      # the segments depend on the content

    def _dtm(self, features: Tensor, start: int, length: int, anchor_frames: list[int],
             shares: list[int], rest_cells: Tensor, is_salient: Tensor) -> list[tuple[Tensor, Tensor]]:
        """DTM on one segment -> per anchor frame (contextual tokens [m, D], their cells [m])."""
        t, n, d = features.shape
        rest = features[anchor_frames].gather(1, rest_cells[anchor_frames, :, None].expand(-1, -1, d))
        scores = density_scores(pairwise_distances(rest), self.k)                 # [A, N-s]
        picks = [rest_cells[f, scores[i].topk(m).indices.sort().values]
                 for i, (f, m) in enumerate(zip(anchor_frames, shares))]
        anchors = torch.cat([features[f, cells] for f, cells in zip(anchor_frames, picks)])  # [M, D]
        # every non-salient token of the segment joins its most cosine-similar anchor; the
        # member's own norm does not change the argmax, so only the anchors are normalised
        members = features[start:start + length].reshape(-1, d)                  # [L*N, D] view
        label = (members.float() @ F.normalize(anchors.float(), dim=-1).T).argmax(dim=-1)
        label[is_salient[start:start + length].reshape(-1)] = len(anchors)       # salient: no vote
        sums = torch.zeros(len(anchors) + 1, d, device=features.device)
        sums.index_add_(0, label, members.float())
        counts = torch.bincount(label, minlength=len(anchors) + 1)[:-1, None].clamp(min=1)
        weight = (1.0 / (counts + 1)).clamp(min=self.alpha)
        merged = (weight * anchors.float() + (1 - weight) * sums[:-1] / counts).to(features.dtype)
        return list(zip(merged.split([len(c) for c in picks]), picks))

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        segments = dyseg(features.mean(dim=1), self.c, self.tau)
        salient, plan = self._plan(t, n, segments)
        device = features.device
        # ATS: top-`salient` cells of every frame by the saliency proxy; the rest go to DTM
        order = saliency_proxy(features).argsort(dim=-1, descending=True, stable=True)   # [T, N]
        salient_cells = order[:, :salient].sort(dim=-1).values                 # [T, s]
        rest_cells = order[:, salient:].sort(dim=-1).values                     # [T, N-s]
        is_salient = torch.zeros(t, n, dtype=torch.bool, device=device)
        is_salient.scatter_(1, salient_cells, True)
        per_frame: dict[int, list[tuple[Tensor, Tensor]]] = {
            f: [(features[f, salient_cells[f]], salient_cells[f])] for f in range(t)}
        start = 0
        for length, shares in zip(segments, plan):
            anchor_frames = list(range(start, start + length, self.p))
            if sum(shares) > 0 and rest_cells.shape[1] > 0:
                per_frame_anchor = self._dtm(features, start, length, anchor_frames, shares,
                                             rest_cells, is_salient)
                for f, item in zip(anchor_frames, per_frame_anchor):
                    per_frame[f].append(item)
            start += length
        tokens, positions, counts_out, kept = [], [], [], []
        for f in range(t):
            block = torch.cat([tok for tok, _ in per_frame[f]])
            cells = torch.cat([cell for _, cell in per_frame[f]])
            if len(cells):
                tokens.append(block)
                positions.append(cell_positions(torch.tensor(f, device=device), cells, grid[1]))
                counts_out.append(len(cells))
                kept.append(f)
        return Reduction(
            tokens=torch.cat(tokens) if tokens else features.new_zeros(0, d),
            frames_kept=kept,
            tokens_per_frame=counts_out,
            info={"segments": segments, "salient_per_frame": salient},
            positions=torch.cat(positions) if positions else torch.zeros(0, 3, dtype=torch.long),
        )
