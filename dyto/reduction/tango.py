"""Tango (Yin et al., 2026, arXiv 2604.09547): diversity-driven salient selection and ST-RoPE merging.

As the official code (``xjtupanda/Tango`` @ cc815b6: ``tango/pruner.py`` ``tango_pruner``,
``tango/utils.py`` ``dpc_knn`` 6-52, ``holitom_segmentation`` 70-117, ``perform_cluster_merging``
120-160, ``tango_compressor`` 162-281, ``tango_token_merger`` 284-474, ``llava/model/st_rope.py``;
defaults ``tango/prune_config.py``; the same files serve Qwen2.5-VL under
``VLMEvalKit/vlmeval/vlm/qwen2_vl/prune_algo/tango/``), all before the LLM:

1. **Segmentation** (HoliTom's): the per-cell cosine of adjacent frames; dynamic programming
   picks windows maximising ``|cells above tau throughout| * (len - 1)`` (``segment_tau``: 0.65 at
   10% retention, 0.8 at 15% / 20%, as ``VLMEvalKit/run_eval_qwen.sh`` sets it).
2. Per segment (``tango_token_merger``): cells whose adjacent-frame cosine stays above 0.8
   (``static_tau``) are **static**: averaged over the segment onto its first frame; the retention
   is raised to ``r / ((total - (T_s - 1) * static) / total)``.
3. **Salient selection** (``context_ratio`` = 0.4 of the kept tokens are context, the rest
   salient): per frame the ``1.5 x k`` most attended tokens are candidates, clustered into k by
   DPC-kNN (k = 7 neighbours) on **ST-RoPE** features (unit features rotated by (t, h, w):
   sections [1196, 1194, 1194] of D = 3584, bases 10000 in time and 1000 in space), and each
   cluster's most attended member is kept.
4. **Context merging**: the remaining tokens of the segment get DPC-kNN anchors; every token joins
   its nearest anchor (in ST-RoPE space) and an anchor becomes ``w * anchor + (1 - w) *
   mean(cluster)``, ``w = max(1 / |cluster|, beta = 0.6)``. Static tokens go through 3-4 as one frame.
5. Output: the kept tokens in frame-major raster order.

Changed (each noted in docs/reducers.md): saliency is ``density.saliency_proxy`` (the contract
carries no vision-encoder attention; the official Qwen path reads the last ViT block's attention,
LLaVA-OV's also zeroes six sink cells); ST-RoPE's time is the frame index (the official code: the
temporal patch's seconds, the same numbers at Qwen's 2 fps); sections for another D: h and w get
the largest even number <= D/3, t the rest; DPC-kNN breaks density ties by index instead of
``rand * 1e-6``. Kept as upstream, a quirk: merged context tokens are written to their anchors in
DPC-score order while computed in cell order, so a merged value can land on another anchor's
cell (``anchor_order: "own"`` writes each at its own anchor).
Run: ``build_reducer("tango", retention=0.1)(features [T, N, D], grid)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import saliency_proxy
from .holitom import static_windows

__all__ = ["TangoReducer", "st_rope", "rope_sections", "tango_dpc"]

DEFAULT_RETENTION = 0.1    # tango/prune_config.py "pre_prune_r"
ANCHOR_ORDERS = ("official", "own")


def rope_sections(dim: int) -> tuple[int, int, int]:
    """(t, h, w) channel sections: h and w the largest even number <= dim / 3, t the rest
    ([1196, 1194, 1194] for 3584, the official ``strope_section``)."""
    side = dim // 3 // 2 * 2
    if side < 2:
        raise ValueError(f"ST-RoPE needs at least 6 channels, got D={dim}")
    return dim - 2 * side, side, side


def _rotate(x: Tensor, angles: Tensor) -> Tensor:
    freqs = torch.cat([angles, angles], dim=-1)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * freqs.cos() + rotated * freqs.sin()


def st_rope(x: Tensor, grid: tuple[int, int], base_time: float = 10000.0, base_space: float = 1000.0,
            t_ids: Tensor | None = None) -> Tensor:
    """``SpatioTemporalRoPE.forward``: x [T, N, D] float -> rotated by (t, row, col) per section."""
    t, n, d = x.shape
    h, w = grid
    dt, dh, dw = rope_sections(d)
    inv = [1.0 / (base ** (torch.arange(0, size, 2, dtype=torch.float) / size))
           for base, size in ((base_time, dt), (base_space, dh), (base_space, dw))]
    times = torch.arange(t, dtype=torch.float) if t_ids is None else t_ids.float()
    gt, gh, gw = torch.meshgrid(times, torch.arange(h, dtype=torch.float), torch.arange(w, dtype=torch.float),
                                indexing="ij")
    flat = x.reshape(-1, d).float()
    parts = torch.split(flat, [dt, dh, dw], dim=-1)
    out = [_rotate(p, torch.outer(g.reshape(-1), f).to(x.device)) for p, g, f in zip(parts, (gt, gh, gw), inv)]
    return torch.cat(out, dim=-1).reshape(t, n, d)


def tango_dpc(x: Tensor, num: int, k: int) -> Tensor:
    """Tango's ``dpc_knn``: x [B, n, D] -> [B, num] centres, highest score first.

    Euclidean distances; density ``exp(-mean(d^2 of the k nearest others))``; delta = distance to
    the nearest denser token (the largest distance for the densest); score = density * delta.
    Density ties are broken by index (denser = later), not by noise.
    """
    dist = torch.cdist(x.float(), x.float())
    b, n, _ = dist.shape
    nearest = dist.topk(min(k + 1, n), dim=-1, largest=False).values[..., 1:]
    density = (-(nearest ** 2).mean(dim=-1)).exp() if nearest.shape[-1] else torch.ones(b, n, device=x.device)
    order = density.argsort(dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(-1, order, torch.arange(n, device=x.device).expand_as(order))
    denser = rank[:, None, :] > rank[:, :, None]
    far = dist.flatten(1).max(dim=1).values[:, None, None]
    delta = torch.where(denser, dist, far).min(dim=-1).values
    return (density * delta).topk(num, dim=-1).indices


class _Kept:
    """Kept tokens of one segment: where each sits (global flat index), its value, how it was made."""

    def __init__(self):
        self.positions, self.values, self.parts = [], [], []

    def keep(self, positions: Tensor, values: Tensor, assignment: Assignment) -> None:
        self.positions.append(positions)
        self.values.append(values)
        self.parts.append(assignment)


def _cluster_merge(src: Tensor, roped_src: Tensor, anchors: Tensor, beta: float):
    """``perform_cluster_merging`` with src = all tokens, anchors = indices into src -> (values [c, D],
    assignment of the c merged tokens over src)."""
    dist = torch.cdist(roped_src.float(), roped_src[anchors].float())
    label = dist.argmin(dim=-1)                                                   # [n]
    target = src[anchors]
    sums = torch.zeros_like(target).index_add_(0, label, src)
    counts = torch.zeros(len(anchors), 1, dtype=src.dtype, device=src.device).index_add_(
        0, label, torch.ones(len(src), 1, dtype=src.dtype, device=src.device))
    means = sums / counts.clamp(min=1)
    w = (1.0 / counts.clamp(min=1)).clamp(min=beta)
    values = w * target + (1 - w) * means
    c = torch.arange(len(anchors), device=src.device)
    wf, cf = w[:, 0].float(), counts[:, 0].float().clamp(min=1)
    rows = torch.cat([c, label])
    sources = torch.cat([anchors, torch.arange(len(src), device=src.device)])
    weights = torch.cat([wf, ((1 - wf) / cf)[label]])
    return values, Assignment(rows, sources, weights, torch.zeros(len(anchors), dtype=torch.bool, device=src.device))


@register_reducer("tango")
class TangoReducer(TokenReducer):
    """Tango's pre-LLM pruning: segments, static averaging, diverse salient tokens, ST-RoPE merging.

    Args:
        num_frames: frames sampled (32).
        retain_ratio: share of the T*N tokens kept (0.1; the paper also runs 0.15 and 0.2).
        segment_tau: segmentation threshold; None = 0.65 at a retention <= 0.1, else 0.8 (the scripts).
        static_tau: a cell is static in a segment above this adjacent-frame cosine (0.8).
        context_ratio: share of each kept budget spent on merged context tokens (0.4).
        alpha: candidate expansion, ``int(alpha * k)`` candidates for k salient tokens (1.5).
        num_neighbors: DPC-kNN neighbours (7). beta: anchor weight floor (0.6).
        base_time, base_space: ST-RoPE bases (10000, 1000).
        anchor_order: "official" (merged values written to anchors in DPC-score order, as upstream)
            or "own" (each at its own anchor).
        target_tokens / retention: matched budgets, as a retain ratio of ``target / (T*N)``.

    Budgets: the default is about the ratio (``ceil`` per frame and segment, a little over). With
    ``target_tokens`` / ``retention`` the retain ratio starts at ``target / (T*N)`` and is lowered
    until the output fits: **at most** the target; a target under its minimums (about a token per
    frame) raises ValueError. The segmentation threshold follows the ratio actually used.
    """

    assigns = True

    def __init__(self, num_frames: int = 32, retain_ratio: float = DEFAULT_RETENTION,
                 segment_tau: float | None = None, static_tau: float = 0.8, context_ratio: float = 0.4,
                 alpha: float = 1.5, num_neighbors: int = 7, beta: float = 0.6, base_time: float = 10000.0,
                 base_space: float = 1000.0, anchor_order: str = "official", target_tokens: int | None = None,
                 retention: float | None = None):
        if num_frames < 1 or num_neighbors < 1 or not 0.0 < retain_ratio <= 1.0:
            raise ValueError(f"need num_frames >= 1, num_neighbors >= 1, retain_ratio in (0, 1]; got "
                             f"{num_frames}, {num_neighbors}, {retain_ratio}")
        if not 0.0 <= context_ratio < 1.0 or alpha < 1.0 or not 0.0 <= beta <= 1.0:
            raise ValueError(f"need context_ratio in [0, 1), alpha >= 1, beta in [0, 1]; got {context_ratio}, "
                             f"{alpha}, {beta}")
        if anchor_order not in ANCHOR_ORDERS:
            raise ValueError(f"unknown anchor_order {anchor_order!r}; expected one of {ANCHOR_ORDERS}")
        check_budget(target_tokens, retention)
        self.num_frames, self.retain_ratio, self.segment_tau, self.static_tau = (num_frames, retain_ratio,
                                                                                 segment_tau, static_tau)
        self.context_ratio, self.alpha, self.num_neighbors, self.beta = context_ratio, alpha, num_neighbors, beta
        self.base_time, self.base_space, self.anchor_order = base_time, base_space, anchor_order
        self.target_tokens, self.retention = target_tokens, retention

    # -- one frame's tokens (or a segment's static tokens): tango_compressor ------------------
    def _compress(self, x: Tensor, roped: Tensor, sal: Tensor, ratio: float, kept: _Kept, to_global: Assignment,
                  slot: Tensor):
        """``x`` [L, D] local tokens; ``to_global`` makes them from the inputs, ``slot`` [L] is where
        each sits (global flat index)."""
        length = x.shape[0]
        retain = max(1, math.ceil(length * ratio)) if length > 0 else 0
        salient_num = int(retain * (1.0 - self.context_ratio))
        context_num = retain - salient_num
        context = torch.ones(length, dtype=torch.bool, device=x.device)
        if salient_num > 0:
            candidates = min(int(self.alpha * salient_num), length)
            k = min(salient_num, candidates)
            cand = torch.topk(sal, k=candidates).indices
            if candidates <= k or candidates <= 1:
                chosen = cand
            else:
                centres = tango_dpc(roped[cand][None], k, self.num_neighbors)[0]
                label = torch.cdist(roped[cand].float(), roped[cand][centres].float()).argmin(dim=-1)
                scores = sal[cand]
                picks = []
                for i in range(k):
                    members = torch.where(label == i)[0]
                    picks.append(members[scores[members].argmax()] if len(members) else centres[i])
                chosen = cand[torch.stack(picks)]
            kept.keep(slot[chosen], x[chosen], Assignment.select(chosen).compose(to_global))
            context[chosen] = False
        if context_num > 0 and bool(context.any()):
            self._merge_context(x, roped, context.nonzero().flatten(), context_num, kept, to_global, slot)

    def _merge_context(self, x, roped, pool: Tensor, budget: int, kept: _Kept, to_global: Assignment, slot: Tensor):
        """Anchors among ``pool`` (local indices) and their beta-merged clusters (step 4)."""
        if len(pool) <= budget:
            kept.keep(slot[pool], x[pool], Assignment.select(pool).compose(to_global))
            return
        centres = tango_dpc(roped[pool][None], budget, self.num_neighbors)[0]      # DPC-score order
        ascending = centres.sort().values
        values, merged = _cluster_merge(x[pool], roped[pool], ascending, self.beta)  # rows in cell order
        anchors = pool[centres] if self.anchor_order == "official" else pool[ascending]
        kept.keep(slot[anchors], values, merged.compose(Assignment.select(pool).compose(to_global)))

    # -- one segment: tango_token_merger -------------------------------------------------------
    def _segment(self, x: Tensor, roped: Tensor, sal: Tensor, first: int, n: int, ratio: float, kept: _Kept):
        frames, length, d = x.shape
        device = x.device
        cells = torch.arange(length, device=device)
        if frames == 1:
            self._compress(x[0], roped[0], sal[0], ratio, kept, Assignment.select(first * n + cells), first * n + cells)
            return
        unit = F.normalize(x.float(), p=2, dim=-1)
        static = torch.all((unit[:-1] * unit[1:]).sum(dim=-1) > self.static_tau, dim=0)           # [L]
        total = frames * length
        ratio = min(ratio / ((total - (frames - 1) * int(static.sum())) / total), 1.0)
        # static cells: their mean over the segment, on its first frame
        s_cells = cells[static]
        members = (torch.arange(frames, device=device)[None, :] + first) * n + s_cells[:, None]   # [S, frames]
        self._compress(x[:, static].mean(dim=0), roped[0, static], sal[:, static].mean(dim=0), ratio, kept,
                       Assignment.groups(members), first * n + s_cells)
        # dynamic cells, frame by frame, then context merged over the whole segment
        dyn_cells = cells[~static]
        m = len(dyn_cells)
        if m == 0:
            return
        dyn, dyn_roped, dyn_sal = x[:, ~static], roped[:, ~static], sal[:, ~static]               # [F, M, *]
        flat_global = ((torch.arange(frames, device=device)[:, None] + first) * n + dyn_cells[None]).reshape(-1)
        retain = math.ceil(m * ratio)
        salient_num = int(retain * (1.0 - self.context_ratio))
        context_num = retain - salient_num
        k = min(salient_num, m)
        context = torch.ones(frames, m, dtype=torch.bool, device=device)
        to_global = Assignment.select(flat_global)
        if k > 0:
            candidates = min(int(self.alpha * k), m)
            cand = torch.topk(dyn_sal, k=candidates, dim=1).indices                                 # [F, C]
            target_k = min(k, candidates)
            if candidates <= target_k or candidates <= 1:
                chosen = cand
            else:
                feats = torch.gather(dyn_roped, 1, cand[..., None].expand(-1, -1, d))
                centres = tango_dpc(feats, target_k, self.num_neighbors)                            # [F, k]
                anchors = torch.gather(feats, 1, centres[..., None].expand(-1, -1, d))
                label = torch.cdist(feats, anchors).argmin(dim=-1)                                  # [F, C]
                hit = label[..., None] == torch.arange(target_k, device=device)                     # [F, C, k]
                scores = torch.gather(dyn_sal, 1, cand)[..., None].masked_fill(~hit, torch.finfo(x.dtype).min)
                best = torch.where(hit.any(dim=1), scores.argmax(dim=1), centres)
                chosen = torch.gather(cand, 1, best)
            local = (torch.arange(frames, device=device)[:, None] * m + chosen).reshape(-1)
            kept.keep(flat_global[local], dyn.reshape(-1, d)[local], Assignment.select(local).compose(to_global))
            context.scatter_(1, chosen, False)
        if context_num > 0:
            pool = context.reshape(-1).nonzero().flatten()
            self._merge_context(dyn.reshape(-1, d), dyn_roped.reshape(-1, d), pool, context_num * frames, kept,
                                to_global, flat_global)

    def __call__(self, features: Tensor, grid: tuple[int, int], cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        target = self.target_for(t, n)
        if target is None:
            return self._reduce(features, grid, self.retain_ratio)
        # matched budget (this project's): Tango's per-frame ceilings overshoot a ratio, so the ratio
        # is lowered until the output fits (at most the target)
        ratio = min(1.0, target / (t * n))
        for _ in range(12):
            out = self._reduce(features, grid, ratio)
            if out.tokens.shape[0] <= target:
                return out
            ratio *= target / out.tokens.shape[0] * 0.98
        raise ValueError(f"tango: a target of {target} tokens is below what its per-frame and per-segment "
                         f"minimums keep ({out.tokens.shape[0]} at retain ratio {ratio:.4f})")

    def _reduce(self, features: Tensor, grid: tuple[int, int], ratio: float) -> Reduction:
        t, n, d = features.shape
        tau = self.segment_tau if self.segment_tau is not None else (0.65 if ratio <= 0.1 else 0.8)
        sal = saliency_proxy(features)                                                              # [T, N]
        roped = st_rope(F.normalize(features.float(), dim=-1), grid, self.base_time, self.base_space)
        unit = F.normalize(features.float(), p=2, dim=-1)
        windows, _ = static_windows((unit[:-1] * unit[1:]).sum(dim=-1), tau, 1024) if t > 1 else ([(0, 0)], 0)
        parts, positions, values = [], [], []
        for start, end in windows:
            kept = _Kept()
            self._segment(features[start:end + 1], roped[start:end + 1], sal[start:end + 1], start, n, ratio, kept)
            parts += kept.parts
            values += kept.values
            positions += kept.positions
        slots = torch.cat(positions)
        order = slots.argsort(stable=True)                        # output: frame-major raster order
        assignment = Assignment.cat(parts)
        assignment = Assignment.select(order).compose(assignment)
        tokens = torch.cat(values)[order].to(features.dtype)
        slots = slots[order]
        frames, cells = slots // n, slots % n
        kept_frames = sorted(set(frames.tolist()))
        return Reduction(tokens, kept_frames, [int((frames == f).sum()) for f in kept_frames],
                         info={"segments": [end - start + 1 for start, end in windows], "segment_tau": tau},
                         positions=cell_positions(frames, cells, grid[1]), input_frames=t, assignment=assignment)
