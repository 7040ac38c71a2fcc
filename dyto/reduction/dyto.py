"""The DyTo reducer: keyframe selection (docs/method.md §4), then per-frame bipartite merging (docs/method.md §5).

Default parameters reproduce the released ``spatial_tome_finch_dynamic_all_frms`` path exactly:
TW-FINCH on token 0, the second-finest partition, at most 25 frames, token 0 dropped from every
kept frame, the 3680-token schedule, element-wise max merging, frames flattened in time order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dyto.errors import check

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .merge import HEADS, REDUCE_MODES, effective_r, merge_frames_tracked
from .selection import VARIANTS, linspace_int, select_keyframes_detailed

__all__ = ["DyToReducer", "merge_schedule", "exact_schedule", "target_groups", "DESCRIPTORS"]

DESCRIPTORS = ("patch0", "cls")
SINGLE_STEP_MAX_FRAMES = 12  # up to 12 kept frames: one merge step; more: two


def merge_schedule(num_kept: int, num_tokens: int = 576, budget: int = 3680) -> list[int]:
    """Per-frame r list for ``num_kept`` frames of ``num_tokens`` tokens (before the token-0 drop).

    The reference hard-codes N = 576 (so N/2 = 288, N/4 = 144): T' <= 12 -> [min(N - Z//T', N/2)],
    else [N/2, min(N/2 - Z//T', N/4)]. r <= 0 means no merge; ``bipartite_merge`` clamps each r
    to half the current count (288 -> 287 on the 575 tokens left after the token-0 drop).
    """
    if num_kept <= SINGLE_STEP_MAX_FRAMES:
        return [min(num_tokens - budget // num_kept, num_tokens // 2)]
    return [num_tokens // 2, min(num_tokens // 2 - budget // num_kept, num_tokens // 4)]


def exact_schedule(num_tokens: int, keep: int) -> list[int]:
    """r list taking ``num_tokens`` tokens to exactly ``keep`` (each step merges at most half).

    575 -> 147 gives [287, 141], the reference's two steps for 25 frames; 575 -> 368 gives [207].
    """
    if not 1 <= keep <= num_tokens:
        raise ValueError(f"cannot keep {keep} of {num_tokens} tokens")
    steps = []
    while num_tokens > keep:
        r = min(num_tokens - keep, num_tokens // 2)
        steps.append(r)
        num_tokens -= r
    return steps or [0]


def target_groups(frames: list[int], tokens: int, target: int) -> list[tuple[list[int], int]]:
    """Split ``target`` tokens over ``frames`` (each with ``tokens`` tokens) -> [(frames, keep)].

    Frames get ``target // T'`` or one more (the earliest ones), capped at ``tokens``; with fewer
    tokens than frames, ``target`` frames are kept (``np.linspace`` subsample), one token each.
    The groups are in time order, so their outputs concatenate in time order.
    """
    if target < len(frames):
        return [([frames[i] for i in linspace_int(len(frames) - 1, target)], 1)]
    per, extra = divmod(target, len(frames))
    if per >= tokens:
        return [(frames, tokens)]
    groups = [(frames[:extra], per + 1), (frames[extra:], per)]
    return [(group, keep) for group, keep in groups if group]


@register_reducer("dyto")
class DyToReducer(TokenReducer):
    """DyTo: cluster frames hierarchically, keep a few per cluster, merge tokens within each.

    Args:
        variant: ``release`` (second-finest partition, the shipped code and the paper) or
            ``pycv2`` (finest partition, the authors' 2024-11-14 bytecode).
        budget: the token budget Z of the schedule (3680 = SF-LLaVA's count; the paper says 7200
            for 34B, the released configs use 3680 for both).
        max_frames: cap on kept frames (the reference's 25), subsampled like ``np.linspace``.
        descriptor: ``patch0`` (token 0 of the patch features, what the code clusters) or
            ``cls`` (the ``cls`` argument of ``__call__``, what the paper describes).
        num_frames: frames to sample from the video before selection (reference: 100).
        reduce: merge reduction, ``amax`` (reference), ``mean`` or ``sum`` (ToMe's average).
        target_tokens / retention: matched-budget mode (``TokenReducer``); None (default) keeps
            the reference schedule.

    Budgets. The reference schedule (``budget`` = Z) is not an exact count: L = T' * p' <= Z,
    e.g. 3675 for 25 kept frames, 3660 for 12 (``merge_schedule``). With ``target_tokens`` or
    ``retention`` the keyframes are selected as usual, ``budget`` is ignored, and each kept
    frame is merged to ``target // T'`` tokens (the earliest ``target % T'`` frames to one more)
    with ``exact_schedule``; L == target exactly whenever target <= T' * (N - 1). Above that the
    kept frames are emitted whole (T' * (N - 1) tokens): keyframe selection bounds the count.
    Below T' tokens, ``target`` frames (linspace subsample) keep one token each.
    """

    exact_budget = True
    assigns = True

    def __init__(self, variant: str = "release", budget: int = 3680, max_frames: int = 25,
                 descriptor: str = "patch0", num_frames: int = 100, reduce: str = "amax",
                 target_tokens: int | None = None, retention: float | None = None):
        check("variant", variant, VARIANTS)
        check("descriptor", descriptor, DESCRIPTORS)
        check("reduce", reduce, REDUCE_MODES)
        for key, value in (("budget", budget), ("max_frames", max_frames), ("num_frames", num_frames)):
            check(key, value, ">=1")
        self.variant, self.budget, self.max_frames = variant, budget, max_frames
        self.descriptor, self.num_frames, self.reduce = descriptor, num_frames, reduce
        self.needs_cls = descriptor == "cls"
        check_budget(target_tokens, retention)
        self.target_tokens, self.retention = target_tokens, retention

    def output_tokens(self, num_frames: int, grid: tuple[int, int]) -> int | None:
        """Known in advance only in target mode and when even the fewest keyframes that the
        selection can return (min(T, 6, max_frames)) hold the target; else None."""
        n = grid[0] * grid[1]
        target = self.target_for(num_frames, n)
        if target is not None and target <= (n - 1) * min(num_frames, 6, self.max_frames):
            return target
        return None

    def _descriptor(self, features: Tensor, cls: Tensor | None) -> Tensor:
        """[T, D'] per-frame descriptor for clustering, checked for shape and finiteness."""
        if self.descriptor == "patch0":
            desc = features[:, 0, :]
        elif cls is None:
            raise ValueError("descriptor='cls' needs the CLS states: pass cls=[T, D] to the reducer")
        elif cls.ndim != 2 or cls.shape[0] != features.shape[0]:
            raise ValueError(f"cls must be [T, D] with T={features.shape[0]}, "
                             f"got shape {tuple(cls.shape)}")
        else:
            desc = cls
        if not bool(torch.isfinite(desc).all()):
            raise ValueError(f"the frame descriptors ({self.descriptor}) contain NaN or inf")
        return desc

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        """features [T, N, D] -> tokens [T' * p', D], p' tokens per kept frame, T' <= max_frames.

        Non-finite values are looked for where they reach the result: in the descriptors, and in
        the output tokens, which every token of a kept frame reaches (kept, or merged: NaN and
        +inf survive amax, mean and sum). Frames that are dropped are not scanned: a full scan
        would cost more than the whole reduction. (A -inf merged away by amax is not reported.)
        """
        t, n, d = check_features(features, grid)
        if d % HEADS:
            raise ValueError(f"DyTo needs the feature dim divisible by {HEADS}, got D={d}")
        if n < 2:
            raise ValueError(f"DyTo drops token 0 of every frame, so it needs N >= 2, got N={n}")
        selection = select_keyframes_detailed(features, self.variant, self.max_frames,
                                              descriptor=self._descriptor(features, cls))
        target = self.target_for(t, n)
        if target is None:
            r_list = merge_schedule(len(selection.frames), n, self.budget)
            groups = [(selection.frames, r_list)]
        else:
            groups = [(frames, exact_schedule(n - 1, keep))
                      for frames, keep in target_groups(selection.frames, n - 1, target)]
            r_list = groups[0][1]
        tokens, positions, per_frame, kept, parts = [], [], [], [], []
        for frames, steps in groups:
            # all frames of a group at once, token 0 dropped (skip=1): [T', p', D]
            merged, cells, (row, weight) = merge_frames_tracked(features, frames, steps, self.reduce, skip=1,
                                                                with_map=True)
            inputs = torch.tensor(frames, device=cells.device)[:, None] * n + torch.arange(1, n, device=cells.device)
            parts.append(Assignment.mapped(row, weight, inputs, merged.shape[1], amax=self.reduce == "amax"))
            # one reduction pass instead of isfinite's several full-size temporaries (~6x faster
            # on CPU): any NaN or inf makes the sum non-finite; fp16/bf16 are summed in fp32 so
            # that finite values cannot overflow into a false alarm.
            wide = torch.float32 if merged.dtype in (torch.float16, torch.bfloat16) else merged.dtype
            if not bool(torch.isfinite(merged.sum(dtype=wide))):
                raise ValueError("the kept frames' features contain NaN or inf")
            tokens.append(merged.reshape(-1, d))                 # frames in time order
            positions.append(cell_positions(torch.tensor(frames, device=cells.device)[:, None],
                                            cells, grid[1]))
            per_frame += [merged.shape[1]] * len(frames)
            kept += frames
        return Reduction(
            tokens=tokens[0] if len(tokens) == 1 else torch.cat(tokens),
            frames_kept=kept,
            tokens_per_frame=per_frame,
            info={"selection": selection, "r_list": r_list,
                  "r_effective": effective_r(n - 1, r_list),
                  "groups": [(frames, steps) for frames, steps in groups]},
            positions=torch.cat(positions),
            input_frames=t,
            assignment=Assignment.cat(parts),
        )
