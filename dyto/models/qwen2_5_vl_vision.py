"""Qwen2.5-VL's vision tower with its windowed attention batched: one attention call per window size
per layer instead of one per window, for several videos at once.

Changed from transformers' ``Qwen2_5_VisionTransformerPretrainedModel.forward`` (the same weights,
called module by module): transformers splits the sequence at every window (and, in the full-
attention blocks, at every temporal patch) and calls ``scaled_dot_product_attention`` once per
piece, so a 7B question of 50 temporal patches of 32x32 patches makes ~22,600 small calls (on an
H200: 1.76 s of CPU launching 0.54 s of kernels). Here the pieces of equal length are stacked
into one ``[n, heads, L, head_dim]`` batch: a grid that is a multiple of the window has one
length (a view, no copy), a partial grid (lmms-eval's per-video sizes) at most four per layer.
Everything that depends only on the grid (window order, its inverse, the rotary cos/sin, the
gather indices) is computed once per grid on the device and cached (:class:`WindowPlan`), so a
forward pass reads nothing back to the host. Several videos (a pool's questions) go through one
pass, as the model's own path does with several ``grid_thw`` rows.

Numerics: the same operations in the same order on the same rows; only the attention calls are
batched, each piece still attending to itself alone, with no mask. On the CPU a video's features
are bitwise the model's own (tests/test_qwen2_5_vl_vision.py; also at the 7B's widths, fp32 and
bf16); on a GPU, attention kernels chosen by batch shape may round differently, which
``benchmarks/check_vision_tower.py`` measures. Several videos in one call are several
``grid_thw`` rows of the model's own forward: the matrix products then have more rows, which can
change their rounding (at the 7B's widths on the CPU, ~1e-6 in fp32).

    from dyto.models.qwen2_5_vl_vision import WindowPlan, batched_tower
    pooled = batched_tower(model.model.visual, flat, [(t, gh, gw), ...], cache)   # [sum t*gh*gw/4, D]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["WindowPlan", "window_lengths", "window_plan", "combine_plans", "batched_tower", "tower_calls",
           "PLAN_CACHE_SIZE"]

PLAN_CACHE_SIZE = 8  # grids whose plans stay on the device (a 100-frame 448-px plan holds ~35 MB of cos/sin)


@dataclass
class WindowPlan:
    """What a forward pass needs that depends only on the grids, on the tower's device.

    ``units`` counts merged tokens (``merge**2`` patches each); rows are patches.
    """

    units: int                       # merged tokens of the grids together
    order: Tensor                    # [units] merged tokens in window order (transformers' window_index)
    restore: Tensor                  # [units] the inverse permutation (argsort of order)
    cos: Tensor                      # [rows, head_dim] fp32 rotary cos, window order
    sin: Tensor                      # [rows, head_dim]
    windows: dict[int, Tensor | None]  # window length -> row indices [n * L] (None: the rows in order)
    frames: dict[int, Tensor | None]   # temporal patch length -> row indices, for the full-attention blocks


def _segments(lengths: list[int], device) -> dict[int, Tensor | None]:
    """Rows of consecutive segments of ``lengths`` grouped by length: ``{L: rows [n * L]}``,
    None when one length covers every row (then a reshape suffices)."""
    if len(set(lengths)) == 1:
        return {lengths[0]: None}
    starts = torch.tensor([0] + lengths[:-1]).cumsum(0)
    out = {}
    for length in sorted(set(lengths)):
        picked = starts[torch.tensor(lengths) == length]
        out[length] = (picked[:, None] + torch.arange(length)).reshape(-1).to(device)
    return out


def _windows(config, grid: tuple[int, int, int]) -> tuple[Tensor, list[int]]:
    """(merged tokens in window order [t*lh*lw], patches per window) of one video's grid, as
    transformers' ``get_vision_window_index`` lays them out (windows of ``window_size`` pixels)."""
    merge, unit = config.spatial_merge_size, config.spatial_merge_size**2
    t, gh, gw = grid
    lh, lw = gh // merge, gw // merge                                   # merged grid
    size = config.window_size // merge // config.patch_size             # window side in merged tokens
    nh, nw = math.ceil(lh / size), math.ceil(lw / size)
    index = torch.arange(t * lh * lw).reshape(t, lh, lw)
    padded = F.pad(index, (0, nw * size - lw, 0, nh * size - lh), value=-1)
    padded = padded.reshape(t, nh, size, nw, size).permute(0, 1, 3, 2, 4).reshape(t, nh * nw, size * size)
    valid = padded >= 0
    return padded[valid], [int(n) * unit for n in valid.sum(-1).reshape(-1) if n > 0]


def window_lengths(config, grid: tuple[int, int, int]) -> list[int]:
    """Patches in each attention window of a video of ``grid`` (``config``: the vision config)."""
    return _windows(config, grid)[1]


def window_plan(visual, grid: tuple[int, int, int], device) -> WindowPlan:
    """The plan of one video of ``grid`` = (temporal patches, patch rows, patch cols)."""
    config = visual.config
    merge, unit = config.spatial_merge_size, config.spatial_merge_size**2
    t, gh, gw = grid
    lh, lw = gh // merge, gw // merge
    order, lengths = _windows(config, grid)                             # [t*lh*lw], window by window
    # rotary angles of each patch (row, col), in the merge-block order of the rows, then window order
    rows = torch.arange(gh).reshape(lh, merge, 1, 1).expand(lh, merge, lw, merge).permute(0, 2, 1, 3).reshape(-1)
    cols = torch.arange(gw).reshape(1, 1, lw, merge).expand(lh, merge, lw, merge).permute(0, 2, 1, 3).reshape(-1)
    inv_freq = visual.rotary_pos_emb.inv_freq.float().cpu()
    angles = torch.cat([rows[:, None].float() * inv_freq, cols[:, None].float() * inv_freq], dim=-1)
    angles = torch.cat([angles, angles], dim=-1).repeat(t, 1)           # [t*gh*gw, head_dim]
    angles = angles.reshape(-1, unit, angles.shape[-1])[order].reshape(-1, angles.shape[-1])
    return WindowPlan(units=t * lh * lw, order=order.to(device), restore=torch.argsort(order).to(device),
                      cos=angles.cos().to(device), sin=angles.sin().to(device),
                      windows=_segments(lengths, device), frames=_segments([gh * gw] * t, device))


def combine_plans(plans: list[WindowPlan]) -> WindowPlan:
    """One plan for videos side by side (their rows concatenated), from their own plans."""
    if len(plans) == 1:
        return plans[0]
    rows = [p.cos.shape[0] for p in plans]
    starts = [sum(rows[:i]) for i in range(len(plans))]

    def merged(key: str) -> dict[int, Tensor | None]:
        found = [getattr(p, key) for p in plans]
        if all(len(f) == 1 and None in f.values() for f in found) and len({next(iter(f)) for f in found}) == 1:
            return dict(found[0])                            # one length everywhere: still a reshape
        out: dict[int, list[Tensor]] = {}
        for segments, start, n in zip(found, starts, rows):
            for length, index in segments.items():
                index = torch.arange(n, device=plans[0].cos.device) if index is None else index
                out.setdefault(length, []).append(index + start)
        return {length: torch.cat(parts) for length, parts in out.items()}

    unit_starts = [sum(p.units for p in plans[:i]) for i in range(len(plans))]
    return WindowPlan(units=sum(p.units for p in plans), order=torch.cat([p.order + s for p, s in zip(plans, unit_starts)]),
                      restore=torch.cat([p.restore + s for p, s in zip(plans, unit_starts)]),
                      cos=torch.cat([p.cos for p in plans]), sin=torch.cat([p.sin for p in plans]),
                      windows=merged("windows"), frames=merged("frames"))


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """transformers' ``apply_rotary_pos_emb_vision`` for one of q, k: in fp32, back to x's dtype."""
    dtype, x = x.dtype, x.float()
    return (x * cos + _rotate_half(x) * sin).to(dtype)


def _attend(q: Tensor, k: Tensor, v: Tensor, segments: dict[int, Tensor | None], scale: float) -> Tensor:
    """Attention within each segment. ``q, k, v``: [rows, heads, head_dim] -> [rows, heads, head_dim]."""
    rows, heads, dim = q.shape
    out = None
    for length, index in segments.items():
        if index is None:                                     # every row, in segments of one length
            pick = [x.view(rows // length, length, heads, dim).transpose(1, 2) for x in (q, k, v)]
        else:
            pick = [x[index].view(-1, length, heads, dim).transpose(1, 2) for x in (q, k, v)]
        o = F.scaled_dot_product_attention(*pick, scale=scale).transpose(1, 2)   # [n, L, heads, dim]
        if index is None:
            return o.reshape(rows, heads, dim)
        if out is None:
            out = q.new_empty(rows, heads, dim)
        out[index] = o.reshape(-1, heads, dim)
    return out


def batched_tower(visual, flat: Tensor, grids: list[tuple[int, int, int]], cache: dict | None = None) -> Tensor:
    """transformers' Qwen2.5-VL vision forward with batched window attention.

    ``flat``: ``[rows, C*tp*p*p]`` the patchified videos one after another (``patchify``'s rows),
    ``grids``: their (temporal patches, patch rows, patch cols). Returns the merged tokens
    ``[units, out_hidden]`` in the rows' order (the model's ``pooler_output``). ``cache`` keeps
    the :class:`WindowPlan` of the ``PLAN_CACHE_SIZE`` grids used last (per device) across calls.
    """
    device = flat.device
    cache = {} if cache is None else cache
    plans = []
    for grid in grids:
        key = (tuple(int(g) for g in grid), str(device))
        plan = cache.pop(key, None) or window_plan(visual, key[0], device)
        cache[key] = plan                                   # most recently used last
        while len(cache) > PLAN_CACHE_SIZE:                 # per-video grids (lmms-eval) vary: keep a few
            del cache[next(iter(cache))]
        plans.append(plan)
    plan = combine_plans(plans)
    unit = visual.config.spatial_merge_size**2
    full = set(visual.config.fullatt_block_indexes)
    x = visual.patch_embed(flat)                                            # [rows, D]
    rows, width = x.shape
    x = x.reshape(plan.units, unit, width)[plan.order].reshape(rows, width)  # window order
    cos, sin = plan.cos.unsqueeze(-2), plan.sin.unsqueeze(-2)                # [rows, 1, head_dim]
    for number, block in enumerate(visual.blocks):
        attn = block.attn
        heads = attn.num_heads
        q, k, v = attn.qkv(block.norm1(x)).reshape(rows, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = _rotary(q, cos, sin), _rotary(k, cos, sin)
        segments = plan.frames if number in full else plan.windows
        o = _attend(q, k, v, segments, attn.scaling)
        x = x + attn.proj(o.reshape(rows, -1))
        x = x + block.mlp(block.norm2(x))
    return visual.merger(x)[plan.restore]


def tower_calls(patches: list[int], chunk: int | None) -> list[list[tuple[int, int, int]]]:
    """(video, first temporal patch, count) per tower call for videos of ``patches`` temporal patches:
    every video whole in one call without ``chunk``, else consecutive pieces filling calls of at most
    ``chunk`` temporal patches (a video may be cut across calls; attention never crosses a patch)."""
    if chunk is None:
        return [[(v, 0, n) for v, n in enumerate(patches)]]
    calls, room = [[]], chunk
    for v, total in enumerate(patches):
        start = 0
        while start < total:
            if room == 0:
                calls.append([])
                room = chunk
            n = min(room, total - start)
            calls[-1].append((v, start, n))
            start, room = start + n, room - n
    return calls
