"""Bipartite token merging inside each frame, as DyTo's ``merge.py`` (docs/method.md §5.2).

Same family as ToMe (Bolya et al., 2023), with these differences, all taken from DyTo:

* **split**: A = the first ``t // 2`` tokens, B = the rest (contiguous halves in raster order),
  not ToMe's alternating even/odd split; nothing is protected (no CLS);
* **metric**: channels are cut into 16 contiguous chunks that are *averaged* into one C/16 vector
  ("multi-head" similarity), then L2-normalised; ToMe uses the attention keys;
* **reduce**: ``amax`` (DyTo's default: element-wise max, sizes stay 1, so no size weighting),
  ``mean`` (``scatter_reduce`` mean of ``x*size`` over the mean of the sizes) or ``sum`` (ToMe's
  size-weighted average, sizes accumulate), all with ``include_self=True``;
* **order**: output = ``[unmerged A tokens, by descending match score] ++ [all of B, in order]``,
  so spatial order is not kept for the surviving A tokens;
* no proportional attention and no unmerge: sizes and positions never leave this module.

A list of r values is applied step by step; each r is clamped to ``t // 2`` of the current token
count and r <= 0 is the identity. A batch ``[B, t, C]`` is merged in one go (each row
independently), which is how DyTo merges all kept frames at once.

Implementation note: a step reads its tokens through a row table ``rows [R, C]`` and an index
``[B, t]`` of row ids, so ``merge_frames`` can merge chosen frames of ``[T, N, C]`` features
without first copying them out (on the CPU, that copy cost more than the merge itself): the
metric is a fused gather-and-sum (``embedding_bag``) and the output is written exactly once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["REDUCE_MODES", "HEADS", "bipartite_merge", "merge_frames", "merge_frames_tracked",
           "merge_with_assignment", "effective_r", "token_map"]

REDUCE_MODES = ("amax", "mean", "sum")
HEADS = 16  # channel chunks averaged into the similarity metric (DyTo's ``head``)


def effective_r(num_tokens: int, r_list: int | Sequence[int]) -> list[int]:
    """The r actually applied by each step of ``r_list`` to ``num_tokens`` tokens (clamped, >= 0)."""
    applied = []
    for r in [r_list] if isinstance(r_list, int) else r_list:
        r = max(0, min(int(r), num_tokens // 2))
        applied.append(r)
        num_tokens -= r
    return applied


def _metric(rows: Tensor, index: Tensor) -> Tensor:
    """Metric of tokens ``rows[index]`` ([R, C], [B, t]) -> [B, t, C/16], unit L2 rows.

    The mean of the 16 contiguous channel chunks of each token, gathered and summed in one
    ``embedding_bag`` over ``rows`` seen as [R*16, C/16] (bag = the token's 16 chunks).
    """
    heads = torch.arange(HEADS, device=index.device)
    chunks = rows.view(-1, rows.shape[1] // HEADS)                           # [R*16, C/16]
    bags = (index.reshape(-1, 1) * HEADS + heads).view(-1, HEADS)            # [B*t, 16]
    metric = F.embedding_bag(bags, chunks, mode="sum").view(*index.shape, -1) / HEADS
    return metric / metric.norm(dim=-1, keepdim=True)


def _match(metric: Tensor, r: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pair every A token with its most similar B token; returns (unm, src, dst) index tensors.

    unm [B, na-r] and src [B, r] index A (by descending best score); dst [B, r] indexes B.
    """
    na = metric.shape[1] // 2
    scores = metric[:, :na] @ metric[:, na:].transpose(1, 2)   # [B, na, nb] cosine similarity
    best_score, best = scores.max(dim=-1)                      # [B, na]
    order = best_score.argsort(dim=-1, descending=True)        # [B, na]
    src = order[:, :r]
    return order[:, r:], src, best.gather(1, src)


def _step(rows: Tensor, index: Tensor, size: Tensor | None, r: int, reduce: str):
    """Merge r A-tokens into B for the tokens ``rows[index]`` ([R, C], [B, t]).

    ``size`` [B, t, 1] are the token sizes, None for ``amax`` (they would stay exactly 1, so the
    reference's ``x * size`` and ``/ size`` change no bit and are skipped).
    Returns (x [B, t-r, C], size, (unm, src, dst)).
    """
    unm, src, dst = _match(_metric(rows, index), r)
    batch, t = index.shape
    na, c = t // 2, rows.shape[1]
    kept = torch.cat([index[:, :na].gather(1, unm), index[:, na:]], dim=1)   # [B, t-r] row ids
    out = rows.index_select(0, kept.view(-1)).view(batch, t - r, c)          # [unm A] ++ [B]
    sources = rows.index_select(0, index[:, :na].gather(1, src).view(-1)).view(batch, r, c)
    into_b = dst[..., None]                                                  # [B, r, 1]
    if size is None:
        # Same result as scatter_reduce_(1, ..., "amax", include_self=True) on out[:, na-r:], but
        # index_reduce_ over flattened rows is ~10x faster on CPU for [10, 288, 4096] tensors.
        rows_out = (torch.arange(batch, device=dst.device)[:, None] * (t - r) + (na - r) + dst).view(-1)
        with warnings.catch_warnings():  # PyTorch labels index_reduce_ beta; its result is tested
            warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta")
            out.view(batch * (t - r), c).index_reduce_(0, rows_out, sources.view(batch * r, c), reduce,
                                                       include_self=True)
        return out, None, (unm, src, dst)
    kept_size = torch.cat([size[:, :na].gather(1, unm[..., None]), size[:, na:]], dim=1)
    source_size = size[:, :na].gather(1, src[..., None])                     # [B, r, 1]
    out.mul_(kept_size)
    out[:, na - r:].scatter_reduce_(1, into_b.expand(-1, -1, c), sources * source_size, reduce,
                                    include_self=True)
    kept_size[:, na - r:].scatter_reduce_(1, into_b, source_size, reduce, include_self=True)
    return out.div_(kept_size), kept_size, (unm, src, dst)


def _merge(rows: Tensor, index: Tensor, r_list: int | Sequence[int], reduce: str):
    """Merge the token batch ``rows[index]`` ([R, C], [B, t]) with every effective step.

    Returns (x [B, t', C] or None if no step ran, [(t, unm, src, dst) per step]).
    """
    if reduce not in REDUCE_MODES:
        raise ValueError(f"unknown reduce mode {reduce!r}; expected one of {REDUCE_MODES}")
    if rows.shape[-1] % HEADS:
        raise ValueError(f"the channel dim ({rows.shape[-1]}) must be divisible by {HEADS}")
    size = None if reduce == "amax" else rows.new_ones(*index.shape, 1)
    out, steps = None, []
    for r in effective_r(index.shape[1], r_list):
        if r > 0:
            t = index.shape[1]
            out, size, indices = _step(rows, index, size, r, reduce)
            steps.append((t, *indices))
            rows = out.view(-1, out.shape[-1])
            index = torch.arange(rows.shape[0], device=rows.device).view(out.shape[:2])
    return out, steps


def _dense(x: Tensor) -> tuple[Tensor, Tensor]:
    """[B, t, C] -> (rows [B*t, C], index [B, t])."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    return rows, torch.arange(rows.shape[0], device=x.device).view(x.shape[:2])


def bipartite_merge(x: Tensor, r: int | Sequence[int], reduce: str = "amax") -> Tensor:
    """Merge tokens of ``x`` [t, C] or [B, t, C] with schedule ``r`` -> [t', C] or [B, t', C].

    Rows of a batch are merged independently (one frame each); C must be divisible by 16.
    """
    if x.ndim not in (2, 3):
        raise ValueError(f"bipartite_merge expects [t, C] or [B, t, C], got {tuple(x.shape)}")
    batch = x if x.ndim == 3 else x[None]
    out, _ = _merge(*_dense(batch), r, reduce)
    if out is None:
        return x
    return out if x.ndim == 3 else out[0]


def merge_frames(features: Tensor, frames: Sequence[int], r: int | Sequence[int],
                 reduce: str = "amax", skip: int = 1) -> Tensor:
    """``bipartite_merge(features[frames, skip:], r, reduce)`` without copying the frames first.

    features [T, N, C]; returns [len(frames), t', C] with t' counted from N - skip tokens.
    """
    return merge_frames_tracked(features, frames, r, reduce, skip)[0]


def token_map(steps: list, num_tokens: int, reduce: str, batch: int, device=None) -> tuple[Tensor, Tensor]:
    """Where every input token ended and with what weight, from ``_merge``'s steps.

    Each step sends every token to exactly one output (kept there or merged into it), so the
    whole merge is a map: returns (row [B, t] long: the output token that holds input token j,
    weight [B, t] float64). With ``amax`` an output is the element-wise max of the inputs mapped
    to it (weights 1); with ``mean`` and ``sum`` it is their weighted sum: a merge gives
    ``sum(x_j * size_j) / sum(size_j)`` over what meets, and the sizes then become the mean
    (``mean``) or the sum (``sum``) of the sizes met, as ``_step`` computes them.
    """
    rows = torch.arange(batch, device=device)[:, None]
    where = torch.arange(num_tokens, device=device).expand(batch, -1).clone()      # current row of each input
    weight = torch.ones(batch, num_tokens, dtype=torch.float64, device=device)
    size = torch.ones(batch, num_tokens, dtype=torch.float64, device=device)       # sizes of the current rows
    for t, unm, src, dst in steps:
        na, kept_a, out = t // 2, unm.shape[1], t - src.shape[1]
        position = torch.empty(batch, t, dtype=torch.long, device=device)         # step input -> step output
        position[rows, unm] = torch.arange(kept_a, device=device).expand(batch, -1)
        position[:, na:] = torch.arange(kept_a, kept_a + t - na, device=device)
        position[rows, src] = kept_a + dst
        if reduce != "amax":
            mass = torch.zeros(batch, out, dtype=torch.float64, device=device).scatter_add_(1, position, size)
            count = torch.zeros(batch, out, dtype=torch.float64, device=device).scatter_add_(
                1, position, torch.ones_like(size))
            weight = weight * (size / mass.gather(1, position)).gather(1, where)
            size = mass if reduce == "sum" else mass / count
        where = position.gather(1, where)
    return where, weight


def merge_frames_tracked(features: Tensor, frames: Sequence[int], r: int | Sequence[int],
                         reduce: str = "amax", skip: int = 1, with_map: bool = False):
    """``merge_frames`` that also says where each output token sits on the input grid.

    Returns (tokens [T', t', C], cells LongTensor [T', t']): the raster cell (0..N-1) of every
    output token. A surviving A token keeps its cell; a B token keeps its own cell whatever was
    merged into it (B is the destination side), so the cells follow ``_step``'s output order.
    ``with_map`` adds :func:`token_map` of the frames' N - skip tokens (row, weight), each [T', N - skip].
    """
    if features.ndim != 3:
        raise ValueError(f"merge_frames expects [T, N, C], got {tuple(features.shape)}")
    t_all, n, c = features.shape
    device = features.device
    frame_ids = torch.as_tensor(list(frames), dtype=torch.long, device=device)
    index = frame_ids[:, None] * n + torch.arange(skip, n, device=device)      # [T', N-skip]
    rows = features.reshape(t_all * n, c).contiguous()              # a view when features is contiguous
    out, steps = _merge(rows, index, r, reduce)
    cells = torch.arange(skip, n, device=device).expand(len(frame_ids), -1)   # [T', N-skip]
    for t, unm, _, _ in steps:        # output = [unmerged A (by score)] ++ [all of B, in order]
        cells = torch.cat([cells[:, : t // 2].gather(1, unm), cells[:, t // 2:]], dim=1)
    if out is None:
        out = rows.index_select(0, index.view(-1)).view(*index.shape, c)
    if with_map:
        return out, cells, token_map(steps, n - skip, reduce, len(frame_ids), device)
    return out, cells


def merge_with_assignment(x: Tensor, r: int | Sequence[int], reduce: str = "amax"):
    """Like ``bipartite_merge`` for one frame ``x`` [t, C], also returning where tokens went.

    Returns (out [t', C], assignment LongTensor [t]): input token i ended in output row
    ``assignment[i]`` (kept there or merged into it). Used to draw merge maps.
    """
    if x.ndim != 2:
        raise ValueError(f"merge_with_assignment expects [t, C], got {tuple(x.shape)}")
    out, steps = _merge(*_dense(x[None]), r, reduce)
    assignment = torch.arange(x.shape[0], device=x.device)
    for t, unm, src, dst in steps:
        na, kept_a = t // 2, unm.shape[1]
        position = torch.empty(t, dtype=torch.long, device=x.device)  # step input -> step output
        position[unm[0]] = torch.arange(kept_a, device=x.device)
        position[na:] = torch.arange(kept_a, kept_a + t - na, device=x.device)
        position[src[0]] = kept_a + dst[0]
        assignment = position[assignment]
    return (x if out is None else out[0]), assignment
