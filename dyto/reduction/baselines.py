"""Baseline reducers to compare DyTo against on equal terms.

* ``SlowFastReducer``: SF-LLaVA's two pathways (spec §10), 3680 tokens for 50 frames of 24x24;
* ``UniformReducer``: every sampled frame, optionally average-pooled on the patch grid;
* ``ConcatReducer``: every token of every frame (the reference's ``concat``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Reduction, TokenReducer, cell_positions, check_features, register_reducer

__all__ = ["SlowFastReducer", "UniformReducer", "ConcatReducer", "slow_frame_indices"]


def _grid_view(features: Tensor, grid: tuple[int, int]) -> Tensor:
    """[T, N, D] -> [T, D, h, w] (a view: channels become the pooling planes)."""
    return features.transpose(1, 2).unflatten(-1, tuple(grid))


def _tokens(pooled: Tensor) -> Tensor:
    """[T, D, h', w'] -> [T, h'*w', D], raster order inside each frame."""
    return pooled.flatten(2).transpose(1, 2)


def window_starts(size: int, out: int) -> Tensor:
    """First input index of each of ``out`` adaptive-pooling windows over ``size`` (floor(i*size/out))."""
    return torch.arange(out) * size // out


def pooled_positions(frames: list[int], grid: tuple[int, int], out_grid: tuple[int, int],
                     device) -> Tensor:
    """[len(frames) * a * b, 3]: top-left cell of every adaptive window, frame-major, raster order."""
    (h, w), (a, b) = grid, out_grid
    cells = (window_starts(h, a)[:, None] * w + window_starts(w, b)[None, :]).reshape(-1)
    return cell_positions(torch.tensor(frames)[:, None], cells[None, :].expand(len(frames), -1),
                          w).to(device)


def slow_frame_indices(num_frames: int, slow_frames: int) -> list[int]:
    """SF-LLaVA's slow frames: ``torch.linspace(0, T, S+1)`` (float32) truncated, last dropped.

    With T < S that list repeats frames (e.g. T=3: 0,0,0,0,1,1,1,2,2,2); duplicates are removed,
    so a short clip uses each frame once. For T >= S the list has no duplicates, so this is
    exactly SF-LLaVA's choice.
    """
    points = torch.linspace(0, num_frames, slow_frames + 1).to(torch.int32).tolist()[:-1]
    return sorted(set(points))


@register_reducer("slowfast")
class SlowFastReducer(TokenReducer):
    """SlowFast-LLaVA: a few frames at high resolution plus all frames at low resolution.

    Slow pathway: ``slow_frames`` frames (``slow_frame_indices``), each reduced by
    ``MaxPool1d(slow_pool, slow_pool)`` over its raster token sequence (576 -> 288: horizontal
    neighbours paired). Fast pathway: every frame ``AdaptiveAvgPool2d(fast_grid)`` on the (h, w)
    grid (24x24 -> 4x4 = 16 tokens). Output: the slow block (frame-major) then the fast block,
    10*288 + 50*16 = 3680 tokens for the reference's 50 frames of 576 tokens.
    """

    def __init__(self, num_frames: int = 50, slow_frames: int = 10, slow_pool: int = 2,
                 fast_grid: int = 4):
        for key, value in (("num_frames", num_frames), ("slow_frames", slow_frames),
                           ("slow_pool", slow_pool), ("fast_grid", fast_grid)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        self.num_frames, self.slow_frames = num_frames, slow_frames
        self.slow_pool, self.fast_grid = slow_pool, fast_grid

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        if n < self.slow_pool:
            raise ValueError(f"slow_pool={self.slow_pool} is larger than the N={n} tokens")
        slow_idx = slow_frame_indices(t, self.slow_frames)
        pairs = n // self.slow_pool          # MaxPool1d(p, p) drops a remainder, as here
        slow = features[slow_idx, : pairs * self.slow_pool]                 # [S, N', D]
        # max over each run of p raster neighbours == MaxPool1d(p, p) along the token axis,
        # without the [S, D, N] transposes (several times faster on the CPU)
        slow = slow.unflatten(1, (pairs, self.slow_pool)).amax(dim=2)      # [S, N/p, D]
        fast = _tokens(F.adaptive_avg_pool2d(_grid_view(features, grid), self.fast_grid))
        tokens = torch.cat([slow.reshape(-1, d), fast.reshape(-1, d)])      # [S*N/p + T*g*g, D]
        # a slow token takes the first cell of its raster run; a fast one its window's top-left
        slow_cells = (torch.arange(pairs) * self.slow_pool)[None].expand(len(slow_idx), -1)
        positions = torch.cat([
            cell_positions(torch.tensor(slow_idx)[:, None], slow_cells, grid[1]).to(tokens.device),
            pooled_positions(list(range(t)), grid, (self.fast_grid,) * 2, tokens.device)])
        return Reduction(
            tokens=tokens,
            frames_kept=list(range(t)),
            tokens_per_frame=[slow.shape[1]] * len(slow_idx) + [fast.shape[1]] * t,
            info={"slow_frames": slow_idx},
            positions=positions,
        )


@register_reducer("uniform")
class UniformReducer(TokenReducer):
    """All ``num_frames`` evenly sampled frames, each average-pooled by ``pool`` on the grid.

    ``pool=1`` keeps every token; ``pool=2`` turns 24x24 into 12x12 (kernel = stride = pool,
    a remainder row/column is dropped). Frames in time order, raster order inside each frame.
    """

    def __init__(self, num_frames: int = 8, pool: int = 1):
        if num_frames < 1 or pool < 1:
            raise ValueError(f"num_frames and pool must be >= 1, got {num_frames}, {pool}")
        self.num_frames, self.pool = num_frames, pool

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, _, d = check_features(features, grid)
        if self.pool > min(grid):
            raise ValueError(f"pool={self.pool} is larger than the grid {tuple(grid)}")
        pooled = features
        if self.pool > 1:
            pooled = _tokens(F.avg_pool2d(_grid_view(features, grid), self.pool))  # [T, n', D]
        # avg_pool2d(p) windows start at i*p, the same as adaptive windows over the h//p*p rows used
        out_grid = (grid[0] // self.pool, grid[1] // self.pool)
        positions = (torch.stack(torch.meshgrid(torch.arange(out_grid[0]), torch.arange(out_grid[1]),
                                                indexing="ij"), -1).reshape(-1, 2) * self.pool)
        positions = torch.cat([torch.arange(t).repeat_interleave(len(positions))[:, None],
                               positions.repeat(t, 1)], 1).to(features.device)
        return Reduction(pooled.reshape(-1, d), list(range(t)), [pooled.shape[1]] * t,
                         positions=positions)


@register_reducer("concat")
class ConcatReducer(TokenReducer):
    """Every token of every frame, frames in time order (the reference's ``concat``)."""

    def __init__(self, num_frames: int = 100):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = num_frames

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        cells = torch.arange(n, device=features.device)[None].expand(t, -1)
        positions = cell_positions(torch.arange(t, device=features.device)[:, None], cells, grid[1])
        return Reduction(features.reshape(t * n, d), list(range(t)), [n] * t, positions=positions)
