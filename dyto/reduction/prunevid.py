"""PruneVid (Huang et al., ACL 2025 Findings, arXiv 2412.16117): its pre-LLM token merging.

Upstream: Visual-AI/PruneVid @ b12600c, ``models/pllava/modeling_pllava.py``
(``cluster_dpc_knn``, ``refine_clusters``, ``merge_frames_dynamic``).

1. **Temporal segmentation** (paper §3.2): the mean token of every frame is clustered with
   DPC-kNN into ``int(T * temporal_segment_ratio)`` clusters (k = 7), then made contiguous as
   the public ``refine_clusters``: each cluster keeps its longest run(s) of frames (a cluster
   whose runs are all single frames is dissolved), and the other runs, left to right, join the
   longer of their neighbouring runs (the left one on a tie), a left neighbour measured after
   the runs before it have joined it.
2. **Static / dynamic separation** (eq. 2-4): in a segment of W frames a grid cell is *static*
   when the mean pairwise cosine similarity of its W tokens exceeds ``tau``; its tokens are
   averaged into one (a token of the segment's first frame). The other cells stay *dynamic*,
   one token per frame.
3. **Spatial merging**: the static tokens of a segment, and the dynamic tokens of each frame,
   are clustered with DPC-kNN into ``int(n * cluster_ratio)`` clusters when there are more than
   14 of them; a cluster becomes the mean of its members and sits at its centre's cell.

Left out / changed: the question-guided pruning inside the LLM (§3.3, attention of the question
to the visual tokens at layer M, keeping alpha of them) needs the LLM: it is the inner stage
``prunevid_llm`` (dyto.models.inner; the whole method: configs/reducers/prunevid_full.yaml); the DPC
tie-break is deterministic (``density``, no ``rand * 1e-6``); ``target_tokens`` / ``retention``
are this project's. Defaults: the public eval.sh (16 frames, tau 0.8, temporal ratio 0.25,
cluster ratio 0.5, k = 7). Output, as the public code: per
segment the static block, then each frame's dynamic block; a clustered block's tokens in the
order of their centres' DPC scores, highest first (unclustered blocks in cell order).
Run: ``build_reducer("prunevid")(features [T, N, D], grid)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dyto.errors import check

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import (allocate, assign_to_centres, density_scores, dpc_centres, merge_clusters,
                      pairwise_distances)

__all__ = ["PruneVidReducer", "contiguous_segments", "cluster_merge"]


def _runs(labels: list[int]) -> list[tuple[int, int, int]]:
    """(label, start, end) of every run of equal labels, end exclusive."""
    runs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((labels[start], start, i))
            start = i
    return runs


def contiguous_segments(labels: list[int]) -> list[int]:
    """Cluster labels of frames -> segment lengths after ``refine_clusters`` (see module doc)."""
    n = len(labels)
    refined = list(labels)
    for label in set(labels):
        runs = [(s, e) for lab, s, e in _runs(labels) if lab == label]
        longest = max(e - s for s, e in runs)
        for s, e in runs:
            if longest == 1 or e - s < longest:
                refined[s:e] = [-1] * (e - s)
    i = 0
    while i < n:                                        # left to right, in place, as upstream
        if refined[i] != -1:
            i += 1
            continue
        start = i
        while i < n and refined[i] == -1:
            i += 1
        left = right = None
        left_len = right_len = 0
        if start > 0:                                   # includes runs that already joined it
            left, j = refined[start - 1], start - 1
            while j >= 0 and refined[j] == left:
                j -= 1
            left_len = start - 1 - j
        if i < n:
            right, j = refined[i], i
            while j < n and refined[j] == right:
                j += 1
            right_len = j - i
        new = left if left_len > right_len else right if right_len > left_len else (
            left if left is not None else right)
        refined[start:i] = [0 if new is None else new] * (i - start)
    return [e - s for _, s, e in _runs(refined)]


def cluster_merge(x: Tensor, counts: list[int], k: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """DPC-kNN merge of each row of x [B, n, D] into counts[b] cluster means.

    Returns per row (tokens [counts[b], D], centre indices [counts[b]], cluster of every token
    [n]), clusters in the order of their centres' DPC scores, highest first, as
    ``cluster_dpc_knn`` numbers them (a token equally near two centres joins the higher-scored
    one); a row whose count is n is returned as it is (every token its own cluster).
    """
    b, n, _ = x.shape
    out = []
    dist = pairwise_distances(x) if any(c < n for c in counts) else None
    for row, count in enumerate(counts):
        if count >= n:
            out.append((x[row], torch.arange(n, device=x.device), torch.arange(n, device=x.device)))
            continue
        centres = density_scores(dist[row:row + 1], k).topk(count, dim=-1).indices  # [1, c]
        labels = assign_to_centres(dist[row:row + 1], centres)                # [1, n]
        out.append((merge_clusters(x[row:row + 1], labels, count)[0], centres[0], labels[0]))
    return out


@register_reducer("prunevid")
class PruneVidReducer(TokenReducer):
    """PruneVid's temporal segmentation, static-token merging and spatial clustering.

    Args:
        num_frames: frames sampled (paper §4.1: 16 for PLLaVA).
        tau: static threshold on the mean pairwise similarity (0.8, paper §4.1 / public code).
        cluster_ratio: spatial clusters per token group (0.5).
        temporal_segment_ratio: frame clusters per frame (0.25).
        k: DPC-kNN neighbours (7).
        min_tokens_to_merge: groups of at most this many tokens are not clustered (14).
        target_tokens / retention: budget. After the temporal merge (M tokens left), the target
            is split over the token groups in proportion to their size, at least one each, and
            every group is clustered to its share: **exact** for groups <= target <= M; above M
            the M tokens are kept (at most); below the number of groups, a ValueError.
    """

    exact_budget = True
    assigns = True

    def __init__(self, num_frames: int = 16, tau: float = 0.8, cluster_ratio: float = 0.5,
                 temporal_segment_ratio: float = 0.25, k: int = 7, min_tokens_to_merge: int = 14,
                 target_tokens: int | None = None, retention: float | None = None):
        check("num_frames", num_frames, ">=1")
        check("k", k, ">=1")
        check("min_tokens_to_merge", min_tokens_to_merge, ">=0")
        check("cluster_ratio", cluster_ratio, "(0,1]")
        check("temporal_segment_ratio", temporal_segment_ratio, "(0,1]")
        check_budget(target_tokens, retention)
        self.num_frames, self.tau, self.cluster_ratio = num_frames, tau, cluster_ratio
        self.temporal_segment_ratio, self.k = temporal_segment_ratio, k
        self.min_tokens_to_merge = min_tokens_to_merge
        self.target_tokens, self.retention = target_tokens, retention

    def segments(self, features: Tensor) -> list[int]:
        """Segment lengths for features [T, N, D]. As upstream, a cluster per frame (ratio 1)
        leaves only single-frame runs, which ``refine_clusters`` dissolves into one segment;
        fewer than one cluster (T * ratio < 1, where upstream fails) is taken as one."""
        t = features.shape[0]
        num = max(1, int(t * self.temporal_segment_ratio))
        dist = pairwise_distances(features.mean(dim=1)[None])                  # [1, T, T]
        labels = assign_to_centres(dist, dpc_centres(dist, num, self.k))[0]
        return contiguous_segments(labels.tolist())

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        device = features.device
        # groups: (frame the tokens sit on, cells [n_g], tokens [n_g, D], how they are made from the
        # inputs); static first per segment
        groups: list[tuple[int, Tensor, Tensor, Assignment]] = []
        start = 0
        segments = self.segments(features)
        for length in segments:
            x = features[start:start + length]                                 # [W, N, D]
            if length > 1:
                unit = torch.nn.functional.normalize(x.float(), dim=-1)
                sim = torch.einsum("wnd,vnd->wvn", unit, unit)                  # [W, W, N]
                mean = (sim.sum(dim=1) - 1).sum(dim=0) / (length * (length - 1))  # [N], self pairs out
                static = mean > self.tau
            else:
                static = torch.zeros(n, dtype=torch.bool, device=device)
            cells = torch.arange(n, device=device)
            if bool(static.any()):                 # (the group's inputs: a static token is a mean over frames)
                members = torch.arange(start, start + length, device=device)[None] * n + cells[static][:, None]
                groups.append((start, cells[static], x[:, static].mean(0), Assignment.groups(members)))
            for w in range(length):
                if bool((~static).any()):
                    groups.append((start + w, cells[~static], x[w, ~static],
                                   Assignment.select((start + w) * n + cells[~static])))
            start += length
        sizes = [len(cells) for _, cells, _, _ in groups]
        target = self.target_for(t, n)
        if target is None:
            shares = [int(s * self.cluster_ratio) if s > self.min_tokens_to_merge else s
                      for s in sizes]
        else:
            shares = allocate(target, sizes, caps=sizes, minimum=1, budget_of="prunevid")
        tokens, positions, per_block, parts = [], [], [], []
        for (frame, cells, x, inputs), share in zip(groups, shares):
            merged, centres, labels = cluster_merge(x[None], [share], self.k)[0]
            tokens.append(merged)
            parts.append(Assignment.groups(_members(labels, share)).compose(inputs))
            positions.append(cell_positions(torch.tensor(frame, device=device), cells[centres],
                                            grid[1]))
            per_block.append(share)
        positions = torch.cat(positions)
        return Reduction(
            tokens=torch.cat(tokens).to(features.dtype),
            frames_kept=sorted(set(positions[:, 0].tolist())),
            tokens_per_frame=per_block,
            info={"segments": segments, "group_sizes": sizes},
            positions=positions,
            input_frames=t,
            assignment=Assignment.cat(parts),
        )


def _members(labels: Tensor, count: int) -> Tensor:
    """[count, K] token indices of each cluster (-1 pads), from every token's cluster [n]."""
    order = labels.argsort(stable=True)
    sizes = torch.bincount(labels, minlength=count)
    width = int(sizes.max()) if len(sizes) else 0
    slot = torch.arange(len(labels), device=labels.device) - (torch.cumsum(sizes, 0) - sizes)[labels[order]]
    members = torch.full((count, max(width, 1)), -1, dtype=torch.long, device=labels.device)
    members[labels[order], slot] = order
    return members
