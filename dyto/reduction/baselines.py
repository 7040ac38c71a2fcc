"""Baseline reducers to compare DyTo against on equal terms.

* ``SlowFastReducer``: SF-LLaVA's two pathways (docs/method.md §10), 3680 tokens for 50 frames of 24x24;
* ``UniformReducer``: every sampled frame, optionally average-pooled on the patch grid;
* ``ConcatReducer``: every token of every frame (the reference's ``concat``).

Each also takes the matched-budget knobs ``target_tokens`` / ``retention`` (``TokenReducer``);
the class docstrings say how each meets them (SlowFast exactly, uniform and concat at most).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dyto.errors import check

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .selection import linspace_int

__all__ = ["SlowFastReducer", "UniformReducer", "ConcatReducer", "slow_frame_indices",
           "pooled_grid_for"]


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


def adaptive_windows(size: int, out: int, kernel: int | None = None) -> list[range]:
    """Input indices of each of ``out`` pooling windows over ``size``: PyTorch's adaptive pooling
    (``floor(i*size/out)`` to ``ceil((i+1)*size/out)``), or ``kernel`` = stride windows."""
    if kernel is not None:
        return [range(i * kernel, (i + 1) * kernel) for i in range(out)]
    return [range(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def pool_assignment(frames: list[int], grid: tuple[int, int], out_grid: tuple[int, int], num_cells: int,
                    amax: bool = False, kernel: int | None = None, device=None) -> Assignment:
    """The windows of a 2-D pooling of ``frames`` on ``grid`` to ``out_grid``, frame-major, raster
    order: each output token the mean (or ``amax``) of its window's cells."""
    (h, w), (a, b) = grid, out_grid
    cells = [[r * w + c for r in rows for c in cols]
             for rows in adaptive_windows(h, a, kernel) for cols in adaptive_windows(w, b, kernel)]
    return _window_assignment(frames, cells, num_cells, amax, device)


def run_assignment(frames: list[int], windows: list[range], num_cells: int, amax: bool, device=None) -> Assignment:
    """Windows over each frame's raster token sequence (SlowFast's slow pathway)."""
    return _window_assignment(frames, [list(r) for r in windows], num_cells, amax, device)


def _window_assignment(frames, cells: list[list[int]], num_cells: int, amax: bool, device) -> Assignment:
    width = max(len(c) for c in cells)
    table = torch.tensor([c + [-1] * (width - len(c)) for c in cells])                 # [k, width]
    offsets = torch.tensor(frames)[:, None, None] * num_cells                          # [F, 1, 1]
    members = torch.where(table[None] >= 0, table[None] + offsets, -1).reshape(-1, width)
    return Assignment.groups(members.to(device), amax=amax)


def slow_frame_indices(num_frames: int, slow_frames: int) -> list[int]:
    """SF-LLaVA's slow frames: ``torch.linspace(0, T, S+1)`` (float32) truncated, last dropped.

    With T < S that list repeats frames (e.g. T=3: 0,0,0,0,1,1,1,2,2,2); duplicates are removed,
    so a short clip uses each frame once. For T >= S the list has no duplicates, so this is
    exactly SF-LLaVA's choice.
    """
    points = torch.linspace(0, num_frames, slow_frames + 1).to(torch.int32).tolist()[:-1]
    return sorted(set(points))


def pooled_grid_for(grid: tuple[int, int], per_frame: int) -> tuple[int, int]:
    """Largest (a, b) with a*b <= per_frame, a <= h, b <= w; ties go to the aspect closest to h:w."""
    h, w = grid
    per_frame = max(1, per_frame)
    best = None
    for a in range(1, h + 1):
        b = min(w, per_frame // a)
        if b < 1:
            break
        key = (a * b, -abs(torch.log(torch.tensor(a * w / (b * h))).item()))
        if best is None or key > best[0]:
            best = (key, (a, b))
    return best[1]


@register_reducer("slowfast")
class SlowFastReducer(TokenReducer):
    """SlowFast-LLaVA: a few frames at high resolution plus all frames at low resolution.

    Slow pathway: ``slow_frames`` frames (``slow_frame_indices``), each reduced by
    ``MaxPool1d(slow_pool, slow_pool)`` over its raster token sequence (576 -> 288: horizontal
    neighbours paired). Fast pathway: every frame ``AdaptiveAvgPool2d(fast_grid)`` on the (h, w)
    grid (24x24 -> 4x4 = 16 tokens). Output: the slow block (frame-major) then the fast block,
    10*288 + 50*16 = 3680 tokens for the reference's 50 frames of 576 tokens.

    Budgets (``target_tokens`` / ``retention``): the fast pathway and the slow frames stay; the
    slow pathway gets the rest, ``target - T*g*g``, split evenly over the S slow frames (the
    earliest get one more), each frame ``AdaptiveMaxPool1d``-ed to its share along the raster
    sequence (for 288 of 576 that is exactly ``MaxPool1d(2, 2)``). Exact for
    ``T*g*g + S <= target <= T*g*g + S*N``; above, the slow frames are kept whole; below, a
    ValueError (lower ``fast_grid``).
    """

    exact_budget = True
    assigns = True

    def __init__(self, num_frames: int = 50, slow_frames: int = 10, slow_pool: int = 2,
                 fast_grid: int = 4, target_tokens: int | None = None,
                 retention: float | None = None):
        for key, value in (("num_frames", num_frames), ("slow_frames", slow_frames),
                           ("slow_pool", slow_pool), ("fast_grid", fast_grid)):
            check(key, value, ">=1")
        check_budget(target_tokens, retention)
        self.num_frames, self.slow_frames = num_frames, slow_frames
        self.slow_pool, self.fast_grid = slow_pool, fast_grid
        self.target_tokens, self.retention = target_tokens, retention

    def _slow_shares(self, num_frames: int, n: int) -> list[int]:
        """Tokens per slow frame in budget mode (ValueError if the fast pathway leaves too few)."""
        slow = len(slow_frame_indices(num_frames, self.slow_frames))
        fast = num_frames * self.fast_grid ** 2
        rest = self.target_for(num_frames, n) - fast
        if rest < slow:
            raise ValueError(f"slowfast: a target of {rest + fast} tokens leaves {rest} for {slow} "
                             f"slow frames after the fast pathway's {fast} (T*fast_grid^2); "
                             "lower fast_grid or raise the target")
        per, extra = divmod(rest, slow)
        if per >= n:
            return [n] * slow
        return [per + 1] * extra + [per] * (slow - extra)

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        n = grid[0] * grid[1]
        if self.target_for(num_frames, n) is not None:
            return sum(self._slow_shares(num_frames, n)) + num_frames * self.fast_grid ** 2
        slow = len(slow_frame_indices(num_frames, self.slow_frames))
        return slow * (n // self.slow_pool) + num_frames * self.fast_grid ** 2

    def _budget_slow(self, features: Tensor, slow_idx: list[int],
                     width: int) -> tuple[Tensor, Tensor, list[int], Assignment]:
        """Slow pathway in budget mode -> (tokens [sum k, D], positions [sum k, 3], k per frame, assignment)."""
        t, n, d = features.shape
        shares = self._slow_shares(t, n)
        tokens, positions, parts = [], [], []
        for share in sorted(set(shares), reverse=True):          # earliest frames have the larger share
            frames = [f for f, k in zip(slow_idx, shares) if k == share]
            pooled = F.adaptive_max_pool1d(features[frames].transpose(1, 2), share)  # [s, D, k]
            tokens.append(pooled.transpose(1, 2).reshape(-1, d))
            cells = window_starts(n, share)[None].expand(len(frames), -1)
            positions.append(cell_positions(torch.tensor(frames)[:, None], cells, width))
            parts.append(run_assignment(frames, adaptive_windows(n, share), n, True, features.device))
        return torch.cat(tokens), torch.cat(positions).to(features.device), shares, Assignment.cat(parts)

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        if n < self.slow_pool:
            raise ValueError(f"slow_pool={self.slow_pool} is larger than the N={n} tokens")
        slow_idx = slow_frame_indices(t, self.slow_frames)
        if self.target_for(t, n) is not None:
            return self._budget_call(features, grid, slow_idx)
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
        assignment = Assignment.cat([
            run_assignment(slow_idx, adaptive_windows(n, pairs, self.slow_pool), n, True, tokens.device),
            pool_assignment(list(range(t)), grid, (self.fast_grid,) * 2, n, device=tokens.device)])
        return Reduction(
            tokens=tokens,
            frames_kept=list(range(t)),
            tokens_per_frame=[slow.shape[1]] * len(slow_idx) + [fast.shape[1]] * t,
            info={"slow_frames": slow_idx},
            positions=positions,
            input_frames=t,
            assignment=assignment,
        )

    def _budget_call(self, features: Tensor, grid: tuple[int, int], slow_idx: list[int]) -> Reduction:
        t, n, d = features.shape
        slow, slow_positions, shares, slow_assignment = self._budget_slow(features, slow_idx, grid[1])
        fast = _tokens(F.adaptive_avg_pool2d(_grid_view(features, grid), self.fast_grid))
        return Reduction(
            tokens=torch.cat([slow, fast.reshape(-1, d)]),
            frames_kept=list(range(t)),
            tokens_per_frame=shares + [fast.shape[1]] * t,
            info={"slow_frames": slow_idx, "slow_shares": shares},
            positions=torch.cat([slow_positions, pooled_positions(
                list(range(t)), grid, (self.fast_grid,) * 2, features.device)]),
            input_frames=t,
            assignment=Assignment.cat([slow_assignment, pool_assignment(
                list(range(t)), grid, (self.fast_grid,) * 2, n, device=features.device)]),
        )


@register_reducer("uniform")
class UniformReducer(TokenReducer):
    """All ``num_frames`` evenly sampled frames, each average-pooled by ``pool`` on the grid.

    ``pool=1`` keeps every token; ``pool=2`` turns 24x24 into 12x12 (kernel = stride = pool,
    a remainder row/column is dropped). Frames in time order, raster order inside each frame.

    Budgets (``target_tokens`` / ``retention``): ``pool`` is ignored and every frame is
    ``AdaptiveAvgPool2d``-ed to the largest grid (a, b) with a*b <= target // T
    (``pooled_grid_for``), so L = T*a*b <= target: at most, not exact (a grid has a*b cells).
    A target below T (one token per frame) cannot be met: ValueError, as for every reducer
    whose floor a target falls under.
    """

    assigns = True

    def __init__(self, num_frames: int = 8, pool: int = 1, target_tokens: int | None = None,
                 retention: float | None = None):
        check("num_frames", num_frames, ">=1")
        check("pool", pool, ">=1")
        check_budget(target_tokens, retention)
        self.num_frames, self.pool = num_frames, pool
        self.target_tokens, self.retention = target_tokens, retention

    def _target(self, t: int, n: int) -> int | None:
        target = self.target_for(t, n)
        if target is not None and target < t:
            raise ValueError(f"uniform: a target of {target} tokens is below one token for each of the {t} frames")
        return target

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        target = self._target(num_frames, grid[0] * grid[1])
        if target is not None:
            a, b = pooled_grid_for(grid, target // num_frames)
            return num_frames * a * b
        return num_frames * (grid[0] // self.pool) * (grid[1] // self.pool)

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        target = self._target(t, n)
        if target is not None:
            out_grid = pooled_grid_for(grid, target // t)
            pooled = _tokens(F.adaptive_avg_pool2d(_grid_view(features, grid), out_grid))
            return Reduction(pooled.reshape(-1, d), list(range(t)), [pooled.shape[1]] * t,
                             info={"grid": out_grid},
                             positions=pooled_positions(list(range(t)), grid, out_grid, features.device),
                             input_frames=t,
                             assignment=pool_assignment(list(range(t)), grid, out_grid, n, device=features.device))
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
        assignment = (Assignment.select(torch.arange(t * n, device=features.device)) if self.pool == 1 else
                      pool_assignment(list(range(t)), grid, out_grid, n, kernel=self.pool, device=features.device))
        return Reduction(pooled.reshape(-1, d), list(range(t)), [pooled.shape[1]] * t,
                         positions=positions, input_frames=t, assignment=assignment)


@register_reducer("concat")
class ConcatReducer(TokenReducer):
    """Every token of every frame, frames in time order (the reference's ``concat``).

    Budgets (``target_tokens`` / ``retention``): whole frames, as many as fit,
    ``f = min(target // N, T)`` of them spread like ``np.linspace`` (uniform frame sampling
    at full resolution), so L = f*N <= target: at most, in steps of N. A target below one frame
    (N tokens) cannot be met: ValueError.
    """

    assigns = True

    def __init__(self, num_frames: int = 100, target_tokens: int | None = None,
                 retention: float | None = None):
        check("num_frames", num_frames, ">=1")
        check_budget(target_tokens, retention)
        self.num_frames = num_frames
        self.target_tokens, self.retention = target_tokens, retention

    def _frames(self, t: int, n: int) -> list[int]:
        target = self.target_for(t, n)
        if target is None:
            return list(range(t))
        if target < n:
            raise ValueError(f"concat: a target of {target} tokens is below one whole frame of {n} tokens")
        return linspace_int(t - 1, min(t, target // n))

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        n = grid[0] * grid[1]
        return len(self._frames(num_frames, n)) * n

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        frames = self._frames(t, n)
        kept = features if len(frames) == t else features[frames]
        cells = torch.arange(n, device=features.device)[None].expand(len(frames), -1)
        positions = cell_positions(torch.tensor(frames, device=features.device)[:, None], cells,
                                   grid[1])
        sources = (torch.tensor(frames, device=features.device)[:, None] * n + cells).reshape(-1)
        return Reduction(kept.reshape(-1, d), frames, [n] * len(frames), positions=positions,
                         input_frames=t, assignment=Assignment.select(sources))
