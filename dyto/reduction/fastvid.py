"""FastVID (Shen et al., NeurIPS 2025, arXiv 2503.11187): DySeg + STPrune, as the public code runs them.

Upstream: LunarShen/FastVID @ a40a109, ``fastvid_llavaonevision/LLaVA-NeXT/llava/model/
language_model/modeling_qwen2.py`` lines 900-1074 (the LLaVA-OneVision variant, which prunes
the video tokens at the input of the first decoder layer).

* **DySeg** (paper §3.2): cosine similarity of adjacent frames' global features; a segment
  boundary after every frame whose similarity is below ``tau`` and after the ``c - 1`` least
  similar transitions, so there are at least ``c`` segments.
* **STPrune** (§3.3): each frame keeps ``retain = int(N * retention)`` tokens, of which
  ``int(retain * d)`` are *contextual* and the rest *salient* (ATS: the top tokens by the
  attention they receive): ``d`` is the contextual share. In a segment of L frames the anchor
  frames are counted back from its end (frames L-1, L-1-p, ...), and each of the ``ceil(L / p)``
  anchor frames takes ``(L * contextual) // ceil(L / p)`` anchors: its densest non-salient
  tokens (DPC-kNN, k = 4). For every anchor frame separately, each non-salient token of the
  whole segment joins that frame's most cosine-similar anchor, and an anchor becomes
  ``a * anchor + (1 - a) * mean(its cluster)`` with ``a = max(1 / (count + 1), alpha)`` (the
  anchor is a member of its own cluster). A segment whose every frame is an anchor frame (one
  frame, or p = 1) merges each frame's own tokens only.
* **Output**: the kept tokens in their original order (frame, then raster cell; salient and
  contextual interleaved), and in the public code each keeps its original position id, so the
  text after the video sits where it would without pruning. ``Reduction.keep_input_positions``
  asks the backbone for that (``positions="input"``, the default); ``positions="compact"``
  gives the kept tokens consecutive positions instead.

Changed / left out (the dyto contract carries patch features only):
* global features are the mean patch feature of each frame, not SigLIP's pooled head output;
* ATS ranks tokens by ``density.saliency_proxy`` (the attention logit a token receives from the
  mean query), not SigLIP's head attention;
* the density tie-break is deterministic (``density``, no ``rand * 1e-6``), and densities are
  computed on the anchor frames only (the only ones whose scores are used);
* an anchor frame never takes more anchors than it has non-salient tokens (the public code
  fails there, e.g. at retention 0.5 with 4-frame segments);
* ``target_tokens`` / ``retention`` (matched budgets) are this project's (below).

Run: ``build_reducer("fastvid")(features [T, N, D], grid)`` (the public default, 10%).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dyto.errors import check

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import allocate, density_scores, pairwise_distances, saliency_proxy

__all__ = ["FastVIDReducer", "dyseg", "anchor_frames"]

DEFAULT_RETENTION = 0.10   # the public code's fastvid_retention_ratio default and its eval.sh
POSITIONS = ("input", "compact")


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


def anchor_frames(start: int, length: int, p: int) -> list[int]:
    """Anchor frames of a segment, ascending: every p-th frame counted back from its last."""
    return [start + j for j in range(length) if (length - 1 - j) % p == 0]


@register_reducer("fastvid")
class FastVIDReducer(TokenReducer):
    """FastVID's DySeg + STPrune on the patch features.

    Args:
        num_frames: frames sampled (paper: 32 for LLaVA-OneVision, §4.1).
        c: minimum number of segments (DySeg, 8, public script).
        tau: similarity threshold for a boundary (0.9).
        d: contextual (DTM) share of a frame's kept tokens (0.4): ``retain - int(retain * d)``
            are salient, as the public code computes them.
        p: anchor-frame step inside a segment, counted back from its end (4).
        alpha: lower bound of the anchor's weight when merging (0.6, public ``DTM_beta``).
        k: neighbours for the DPC-kNN density (4, public code).
        positions: "input" (default, the public code): the backbone places every kept token at
            its position in the unpruned sequence; "compact": consecutive positions.
        target_tokens / retention: budget. Neither set: the public default, 10% with its
            per-frame arithmetic (``int(N * 0.1)`` per frame, floors per anchor frame), a few
            tokens under 10%. Either set: ``retain = target // T``, ``retain - int(retain * d)``
            salient tokens per frame, the rest split over segments by length and over a
            segment's anchor frames evenly, so the count is **exact** unless an anchor frame
            runs out of tokens (then at most).
    """

    exact_budget = True
    assigns = True

    def __init__(self, num_frames: int = 32, c: int = 8, tau: float = 0.9, d: float = 0.4,
                 p: int = 4, alpha: float = 0.6, k: int = 4, positions: str = "input",
                 target_tokens: int | None = None, retention: float | None = None):
        for key, value in (("num_frames", num_frames), ("c", c), ("p", p), ("k", k)):
            check(key, value, ">=1")
        check("d", d, "[0,1]")
        check("alpha", alpha, "[0,1]")
        check("positions", positions, POSITIONS)
        check_budget(target_tokens, retention)
        self.num_frames, self.c, self.tau, self.d, self.p = num_frames, c, tau, d, p
        self.alpha, self.k, self.positions = alpha, k, positions
        self.target_tokens, self.retention = target_tokens, retention

    def _plan(self, t: int, n: int, segments: list[int]) -> tuple[int, list[list[int]]]:
        """(salient per frame, anchors of each anchor frame of each segment, ascending frames)."""
        anchors = [len(anchor_frames(0, length, self.p)) for length in segments]
        target = self.target_for(t, n)
        retain = int(n * DEFAULT_RETENTION) if target is None else target // t
        salient = min(n, retain - int(retain * self.d))
        if target is None:                   # the public arithmetic
            context = retain - salient
            return salient, [[min(n - salient, context * length // a)] * a
                             for length, a in zip(segments, anchors)]
        per_segment = allocate(max(0, target - salient * t), segments, minimum=0)
        plan = []
        for total, a in zip(per_segment, anchors):
            per, extra = divmod(total, a)    # the remainder to the last anchor frames
            plan.append([min(n - salient, per + (i >= a - extra)) for i in range(a)])
        return salient, plan

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        return None                      # the segments depend on the content

    def _dtm(self, non_salient: Tensor, rest: Tensor, frames: list[int], members: list[Tensor],
             shares: list[int], member_ids: list[Tensor], n: int) -> list[tuple[int, Tensor, Tensor, Assignment]]:
        """DTM for one segment -> per anchor frame (frame, merged anchors [m, D], their cells [m],
        how each was made from the inputs).

        non_salient: [T, N-s, D] the tokens at ``rest`` [T, N-s] (each frame's non-salient
        cells, ascending); frames: the anchor frames; members[i]: the tokens [M_i, D] that
        frame i's anchors gather, member_ids[i] their flat input indices [M_i] (N = n cells a frame).
        """
        pool = non_salient[frames]                                                      # [A, N-s, D]
        scores = density_scores(pairwise_distances(pool), self.k)                       # [A, N-s]
        out = []
        for i, (f, m) in enumerate(zip(frames, shares)):
            if m == 0:
                continue
            pick = scores[i].topk(m).indices                                            # [m]
            anchors = pool[i, pick].float()                                             # [m, D]
            x = members[i].float()                                                      # [M, D]
            label = (F.normalize(x, dim=-1) @ F.normalize(anchors, dim=-1).T).argmax(dim=-1)
            sums = torch.zeros_like(anchors).index_add_(0, label, x)
            counts = torch.bincount(label, minlength=m)[:, None].float()
            weight = (1.0 / (counts + 1)).clamp(min=self.alpha)
            merged = weight * anchors + (1 - weight) * sums / counts.clamp(min=1)
            rows = torch.cat([torch.arange(m, device=label.device), label])   # anchor, then its cluster
            sources = torch.cat([f * n + rest[f, pick], member_ids[i]])
            weights = torch.cat([weight[:, 0], ((1 - weight[:, 0]) / counts[:, 0].clamp(min=1))[label]])
            made = Assignment(rows, sources, weights, torch.zeros(m, dtype=torch.bool, device=label.device))
            out.append((f, merged.to(non_salient.dtype), rest[f, pick], made))
        return out

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        segments = dyseg(features.mean(dim=1), self.c, self.tau)
        salient, plan = self._plan(t, n, segments)
        device = features.device
        # ATS: top-`salient` cells of every frame by the saliency proxy; the rest go to DTM
        order = saliency_proxy(features).argsort(dim=-1, descending=True, stable=True)   # [T, N]
        rest = order[:, salient:].sort(dim=-1).values                                   # [T, N-s]
        kept = torch.zeros(t, n, dtype=torch.bool, device=device)
        kept.scatter_(1, order[:, :salient], True)
        non_salient = features.gather(1, rest[:, :, None].expand(-1, -1, d))            # [T, N-s, D]
        values = features.clone()                           # a kept anchor's cell gets its merged value
        rest_ids = torch.arange(t, device=device)[:, None] * n + rest                   # [T, N-s] flat
        slots = [kept.reshape(-1).nonzero().flatten()]                                  # salient: copies
        parts = [Assignment.select(slots[0])]
        start = 0
        for length, shares in zip(segments, plan):
            frames = anchor_frames(start, length, self.p)
            if sum(shares) > 0 and rest.shape[1] > 0:
                own = len(frames) == length                  # every frame an anchor: its own tokens
                members = [non_salient[f] if own else non_salient[start:start + length].reshape(-1, d)
                           for f in frames]
                ids = [rest_ids[f] if own else rest_ids[start:start + length].reshape(-1) for f in frames]
                for f, merged, cells, made in self._dtm(non_salient, rest, frames, members, shares, ids, n):
                    values[f, cells] = merged
                    kept[f, cells] = True
                    slots.append(f * n + cells)
                    parts.append(made)
            start += length
        frame_ids, cells = kept.nonzero(as_tuple=True)      # row-major: frame, then raster cell
        counts = torch.bincount(frame_ids, minlength=t)
        frames_kept = [f for f in range(t) if counts[f] > 0]
        # the assignment in output order: every kept slot once, salient copies and merged anchors
        assignment = Assignment.select(torch.cat(slots).argsort()).compose(Assignment.cat(parts))
        return Reduction(
            tokens=values[frame_ids, cells],
            frames_kept=frames_kept,
            tokens_per_frame=[int(counts[f]) for f in frames_kept],
            info={"segments": segments, "salient_per_frame": salient},
            positions=cell_positions(frame_ids, cells, grid[1]),
            input_frames=t,
            keep_input_positions=self.positions == "input",
            assignment=assignment,
        )
