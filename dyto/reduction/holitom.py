"""HoliTom (Shao et al., NeurIPS 2025, arXiv 2505.21334): its outer-LLM holistic merging.

Upstream: cokeshao/HoliTom @ e9b2972, ``holitom/llava_arch.py`` (``LlavaMetaForCausalLM_holitom``,
lines 29-312, and the video branch of ``prepare_inputs_labels_for_multimodal``, 375-407).

1. **Global redundancy-aware temporal segmentation** (paper §3.2): with s_t = the per-cell
   cosine similarity of frames t and t+1, a window [s, e] makes ``|{cells with s_t > tau for all
   t in [s, e)}| * (e - s)`` tokens redundant; dynamic programming picks the partition of the
   video into windows (at most ``max_window`` frames) that maximises the redundant tokens.
2. **Temporal merging**: in a window, the cells static over the whole window are averaged over
   time into one token each (on the window's first frame); the others stay, one per frame.
3. **Spatial merging** (§3.3): the retention is raised to ``r' = min(r * total / (total -
   redundant), 1)`` so the final count is about r of the input. Static tokens of a window:
   ``round(n * r')`` DPC-kNN centres (k = 7); every other token joins its nearest centre and a
   centre becomes ``beta * centre + (1 - beta) * mean(its other members)``. Dynamic tokens of a
   frame: ``ceil(n * r')`` kept, ``1 - contextual`` of them the most attended (dominant), the
   rest DPC-kNN centres of the remaining tokens merged the same way (contextual).

Left out / changed: the inner-LLM merging (§3.4, at layer K of the LLM) is the inner stage
``holitom_inner`` (dyto.models.inner; the whole method: configs/reducers/holitom_full.yaml); dominant
tokens are ranked by ``density.saliency_proxy`` computed over each whole frame, where the public
code's SigLIP attention comes from (the dyto contract carries no attention); the DPC tie-break
is deterministic (no ``rand * 1e-6``); ``contextual`` > 0 follows the paper, since the public
code fails there (a shape error in ``merge_tokens_by_attention_density``); ``target_tokens`` /
``retention`` are this project's. Defaults are the public code's (``T`` = 0.8); its 10%
evaluation script for LLaVA-OV-7B sets ``T=0.65`` (``tau=0.65`` here). Output, as the public
code with LLaVA-OV's ``one_token`` newline mode: per window the static tokens, then each
frame's dominant tokens (cell order), then its contextual tokens (centre order).
Run: ``build_reducer("holitom", retention=0.1)(features [T, N, D], grid)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dyto.errors import check

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import (allocate, assign_to_centres, cell_cosine, dpc_centres,
                      pairwise_distances, saliency_proxy)

__all__ = ["HoliTomReducer", "static_windows"]

DEFAULT_RETENTION = 0.1    # the public code's RETAIN_RATIO default (paper Table 1, 10% row)


def static_windows(sim: Tensor, tau: float, max_window: int) -> tuple[list[tuple[int, int]], int]:
    """Windows [(start, end)] (inclusive) maximising redundant tokens, and that maximum.

    sim: [T-1, N] per-cell similarity of adjacent frames. Ties keep the shorter window, as the
    public ``select_static_windows`` (a longer window must be strictly better).
    """
    t = sim.shape[0] + 1
    above = (sim > tau).cpu()
    gain = {}                                          # (s, e) -> redundant tokens, e > s
    for s in range(t - 1):
        run = torch.ones(above.shape[1], dtype=torch.bool)
        for e in range(s + 1, min(t, s + max_window)):
            run &= above[e - 1]
            count = int(run.sum())
            if count == 0:
                break
            gain[s, e] = count * (e - s)
    best, prev = [0] * t, list(range(t))
    for i in range(t):
        value, start = (best[i - 1] if i else 0), i
        for size in range(2, min(i + 1, max_window) + 1):
            j = i - size
            candidate = (best[j] if j >= 0 else 0) + gain.get((j + 1, i), 0)
            if candidate > value:
                value, start = candidate, j + 1
        best[i], prev[i] = value, start
    windows, i = [], t - 1
    while i >= 0:
        windows.append((prev[i], i))
        i = prev[i] - 1
    return windows[::-1], best[-1]


def _beta_merge(x: Tensor, dist: Tensor, centres: Tensor, beta: float) -> Tensor:
    """x [n, D], dist [n, n], centres [c] -> [c, D]: beta*centre + (1-beta)*mean(other members)."""
    labels = assign_to_centres(dist[None], centres[None])[0]                    # [n]
    others = torch.ones(len(x), dtype=torch.bool, device=x.device)
    others[centres] = False
    sums = torch.zeros(len(centres), x.shape[1], device=x.device)
    sums.index_add_(0, labels[others], x[others].float())
    counts = torch.bincount(labels[others], minlength=len(centres))[:, None]
    centre = x[centres].float()
    merged = torch.where(counts > 0, beta * centre + (1 - beta) * sums / counts.clamp(min=1), centre)
    return merged.to(x.dtype)


def beta_assignment(num: int, dist: Tensor, centres: Tensor, beta: float) -> Assignment:
    """``_beta_merge`` as a table over its ``num`` inputs: centre c is ``beta`` of itself plus
    ``(1 - beta) / m`` of each of its m other members (itself alone when it has none)."""
    labels = assign_to_centres(dist[None], centres[None])[0]                    # [n]
    others = torch.ones(num, dtype=torch.bool, device=dist.device)
    others[centres] = False
    counts = torch.bincount(labels[others], minlength=len(centres)).float()
    own = torch.where(counts > 0, torch.full_like(counts, beta), torch.ones_like(counts))
    rows = torch.cat([torch.arange(len(centres), device=dist.device), labels[others]])
    sources = torch.cat([centres, others.nonzero().flatten()])
    weights = torch.cat([own, ((1 - beta) / counts.clamp(min=1))[labels[others]]])
    return Assignment(rows, sources, weights, torch.zeros(len(centres), dtype=torch.bool, device=dist.device))


@register_reducer("holitom")
class HoliTomReducer(TokenReducer):
    """HoliTom's outer-LLM segmentation, temporal and spatial merging.

    Args:
        num_frames: frames sampled (paper §4.1: 32 for LLaVA-OneVision).
        tau: static threshold on adjacent-frame similarity (0.8, public code ``T``; its 10%
            script for LLaVA-OV-7B uses 0.65).
        beta: weight of the centre when merging (0.6, public code ``BETA``).
        contextual: share of a frame's kept dynamic tokens that are contextual (public code
            ``D`` = 0: all kept dynamic tokens are the most attended ones).
        k: DPC-kNN neighbours (7, public code ``K``).
        max_window: longest window (1024, public code ``MAX_WINDOW_SIZE``).
        target_tokens / retention: budget. Neither set: the public default r = 0.1 with its
            per-group rounding (about 10%). Either set: the target is split over the token
            groups left after the temporal merge (static group of a window, dynamic group of a
            frame) in proportion to their size, at least one each: **exact** for groups <=
            target <= tokens left (M); above M all M are kept (at most); below the number of groups, a
            ValueError.
    """

    exact_budget = True
    assigns = True

    def __init__(self, num_frames: int = 32, tau: float = 0.8, beta: float = 0.6,
                 contextual: float = 0.0, k: int = 7, max_window: int = 1024,
                 target_tokens: int | None = None, retention: float | None = None):
        for key, value in (("num_frames", num_frames), ("k", k), ("max_window", max_window)):
            check(key, value, ">=1")
        check("beta", beta, "[0,1]")
        check("contextual", contextual, "[0,1]")
        check_budget(target_tokens, retention)
        self.num_frames, self.tau, self.beta, self.contextual = num_frames, tau, beta, contextual
        self.k, self.max_window = k, max_window
        self.target_tokens, self.retention = target_tokens, retention

    def _dynamic(self, x: Tensor, saliency: Tensor, keep: int) -> tuple[Tensor, Tensor, Assignment]:
        """One frame's dynamic tokens x [n, D] -> (tokens [keep, D], their cells' indices into x,
        how each was made from x)."""
        dominant = round(keep * (1 - self.contextual))
        order = saliency.argsort(descending=True, stable=True)
        top = order[:dominant].sort().values
        rest = order[dominant:].sort().values
        parts = [(x[top], top, Assignment.select(top))]
        context = keep - dominant
        if context > 0 and len(rest):
            dist = pairwise_distances(x[rest][None])[0]
            centres = dpc_centres(dist[None], min(context, len(rest)), min(self.k, context))[0]
            merged = beta_assignment(len(rest), dist, centres, self.beta).compose(Assignment.select(rest))
            parts.append((_beta_merge(x[rest], dist, centres, self.beta), rest[centres], merged))
        return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                Assignment.cat([p[2] for p in parts]))

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        device = features.device
        sim = cell_cosine(features, list(range(t - 1)), list(range(1, t)))    # [T-1, N]
        windows, redundant = static_windows(sim, self.tau, self.max_window)
        cells = torch.arange(n, device=device)
        groups = []                          # (kind, frame, cells [n_g], tokens [n_g, D], their inputs)
        for s, e in windows:
            static = torch.zeros(n, dtype=torch.bool, device=device)
            if e > s:
                static = (sim[s:e] > self.tau).all(dim=0)
            if bool(static.any()):
                members = torch.arange(s, e + 1, device=device)[None] * n + cells[static][:, None]  # [n_g, frames]
                groups.append(("static", s, cells[static], features[s:e + 1, static].mean(0),
                               Assignment.groups(members)))
            if bool((~static).any()):
                groups += [("dynamic", f, cells[~static], features[f, ~static],
                            Assignment.select(f * n + cells[~static])) for f in range(s, e + 1)]
        sizes = [len(g[2]) for g in groups]
        target = self.target_for(t, n)
        if target is None:                   # the public expression, float for float
            r = min(DEFAULT_RETENTION / ((t * n - redundant) / (t * n)), 1) if redundant < t * n else 1.0
            shares = [round(size * r) if kind == "static" else math.ceil(size * r)
                      for (kind, *_), size in zip(groups, sizes)]
        else:
            shares = allocate(target, sizes, caps=sizes, minimum=1, budget_of="holitom")
        saliency = saliency_proxy(features)                  # [T, N], over each whole frame
        tokens, positions, per_block, parts = [], [], [], []
        for (kind, frame, group_cells, x, inputs), share in zip(groups, shares):
            if share == 0:
                continue
            if kind == "static":
                dist = pairwise_distances(x[None])[0]
                centres = dpc_centres(dist[None], share, min(self.k, share))[0]
                out, idx = _beta_merge(x, dist, centres, self.beta), centres
                made = beta_assignment(len(x), dist, centres, self.beta)
            else:
                out, idx, made = self._dynamic(x, saliency[frame, group_cells], share)
            tokens.append(out)
            parts.append(made.compose(inputs))
            positions.append(cell_positions(torch.tensor(frame, device=device), group_cells[idx],
                                            grid[1]))
            per_block.append(len(idx))
        positions = torch.cat(positions)
        return Reduction(
            tokens=torch.cat(tokens).to(features.dtype),
            frames_kept=sorted(set(positions[:, 0].tolist())),
            tokens_per_frame=per_block,
            info={"windows": windows, "redundant": redundant, "group_sizes": sizes},
            positions=positions,
            input_frames=t,
            assignment=Assignment.cat(parts),
        )
