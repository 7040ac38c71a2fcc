"""PruneVid (Huang et al., ACL 2025 Findings, arXiv 2412.16117): its pre-LLM token merging.

1. **Temporal segmentation** (paper §3.2): the mean token of every frame is clustered with
   DPC-kNN into ``int(T * temporal_segment_ratio)`` clusters (k = 7), then made contiguous as
   the public ``refine_clusters``: each cluster keeps its longest run(s) of frames (a cluster
   whose runs are all single frames is dissolved) and every other run joins the longer of its
   neighbouring runs (the left one on a tie).
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
tie-break is deterministic (``density``). Output: per segment the static block, then each
frame's dynamic block; clusters in the order of their centres' cells.
Run: ``build_reducer("prunevid")(features [T, N, D], grid)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import allocate, assign_to_centres, dpc_centres, merge_clusters, pairwise_distances

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
    refined = list(labels)
    for label in set(labels):
        runs = [(s, e) for lab, s, e in _runs(labels) if lab == label]
        longest = max(e - s for s, e in runs)
        for s, e in runs:
            if longest == 1 or e - s < longest:
                refined[s:e] = [-1] * (e - s)
    runs = _runs(refined)
    for i, (label, s, e) in enumerate(runs):
        if label != -1:
            continue
        left = runs[i - 1] if i > 0 else None          # already relabelled if it was -1
        right = runs[i + 1] if i + 1 < len(runs) and runs[i + 1][0] != -1 else None
        left_len = left[2] - left[1] if left else 0
        right_len = right[2] - right[1] if right else 0
        new = right[0] if right_len > left_len else (left[0] if left else (right[0] if right else 0))
        refined[s:e] = [new] * (e - s)
        runs[i] = (new, s, e)
    return [e - s for _, s, e in _runs(refined)]


def cluster_merge(x: Tensor, counts: list[int], k: int) -> list[tuple[Tensor, Tensor]]:
    """DPC-kNN merge of each row of x [B, n, D] into counts[b] cluster means.

    Returns per row (tokens [counts[b], D], centre indices [counts[b]] ascending); a row whose
    count is n is returned as it is.
    """
    b, n, _ = x.shape
    out = []
    dist = pairwise_distances(x) if any(c < n for c in counts) else None
    for row, count in enumerate(counts):
        if count >= n:
            out.append((x[row], torch.arange(n, device=x.device)))
            continue
        centres = dpc_centres(dist[row:row + 1], count, k)                    # [1, c]
        labels = assign_to_centres(dist[row:row + 1], centres)                # [1, n]
        out.append((merge_clusters(x[row:row + 1], labels, count)[0], centres[0]))
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

    def __init__(self, num_frames: int = 16, tau: float = 0.8, cluster_ratio: float = 0.5,
                 temporal_segment_ratio: float = 0.25, k: int = 7, min_tokens_to_merge: int = 14,
                 target_tokens: int | None = None, retention: float | None = None):
        if num_frames < 1 or k < 1 or min_tokens_to_merge < 0:
            raise ValueError("num_frames and k must be >= 1 and min_tokens_to_merge >= 0")
        if not 0.0 < cluster_ratio <= 1.0 or not 0.0 < temporal_segment_ratio <= 1.0:
            raise ValueError(f"cluster_ratio and temporal_segment_ratio must be in (0, 1], got "
                             f"{cluster_ratio}, {temporal_segment_ratio}")
        check_budget(target_tokens, retention)
        self.num_frames, self.tau, self.cluster_ratio = num_frames, tau, cluster_ratio
        self.temporal_segment_ratio, self.k = temporal_segment_ratio, k
        self.min_tokens_to_merge = min_tokens_to_merge
        self.target_tokens, self.retention = target_tokens, retention

    def segments(self, features: Tensor) -> list[int]:
        """Segment lengths for features [T, N, D]."""
        t = features.shape[0]
        num = max(1, int(t * self.temporal_segment_ratio))
        if num >= t:
            return [1] * t
        dist = pairwise_distances(features.mean(dim=1)[None])                  # [1, T, T]
        labels = assign_to_centres(dist, dpc_centres(dist, num, self.k))[0]
        return contiguous_segments(labels.tolist())

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        device = features.device
        # groups: (frame the tokens sit on, cells [n_g], tokens [n_g, D]); static first per segment
        groups: list[tuple[int, Tensor, Tensor]] = []
        start = 0
        segments = self.segments(features)
        for length in segments:
            x = features[start:start + length]                                 # [W, N, D]
            if length > 1:
                unit = torch.nn.functional.normalize(x.float(), dim=-1)
                pair_sum = unit.sum(0).pow(2).sum(-1) - length                 # [N]
                static = pair_sum / (length * (length - 1)) > self.tau
            else:
                static = torch.zeros(n, dtype=torch.bool, device=device)
            cells = torch.arange(n, device=device)
            if bool(static.any()):
                groups.append((start, cells[static], x[:, static].mean(0)))
            for w in range(length):
                if bool((~static).any()):
                    groups.append((start + w, cells[~static], x[w, ~static]))
            start += length
        sizes = [len(cells) for _, cells, _ in groups]
        target = self.target_for(t, n)
        if target is None:
            shares = [int(s * self.cluster_ratio) if s > self.min_tokens_to_merge else s
                      for s in sizes]
        else:
            shares = allocate(target, sizes, caps=sizes, minimum=1, budget_of="prunevid")
        tokens, positions, per_block = [], [], []
        for (frame, cells, x), share in zip(groups, shares):
            merged, centres = cluster_merge(x[None], [share], self.k)[0]
            tokens.append(merged)
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
        )
