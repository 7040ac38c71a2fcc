"""The DyTo reducer: keyframe selection (spec §4), then per-frame bipartite merging (spec §5).

Default parameters reproduce the released ``spatial_tome_finch_dynamic_all_frms`` path exactly:
TW-FINCH on token 0, the second-finest partition, at most 25 frames, token 0 dropped from every
kept frame, the 3680-token schedule, element-wise max merging, frames flattened in time order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Reduction, TokenReducer, cell_positions, check_features, register_reducer
from .merge import HEADS, REDUCE_MODES, effective_r, merge_frames_tracked
from .selection import VARIANTS, select_keyframes_detailed

__all__ = ["DyToReducer", "merge_schedule", "DESCRIPTORS"]

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
    """

    def __init__(self, variant: str = "release", budget: int = 3680, max_frames: int = 25,
                 descriptor: str = "patch0", num_frames: int = 100, reduce: str = "amax"):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        if descriptor not in DESCRIPTORS:
            raise ValueError(f"unknown descriptor {descriptor!r}; expected one of {DESCRIPTORS}")
        if reduce not in REDUCE_MODES:
            raise ValueError(f"unknown reduce mode {reduce!r}; expected one of {REDUCE_MODES}")
        for key, value in (("budget", budget), ("max_frames", max_frames),
                           ("num_frames", num_frames)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        self.variant, self.budget, self.max_frames = variant, budget, max_frames
        self.descriptor, self.num_frames, self.reduce = descriptor, num_frames, reduce
        self.needs_cls = descriptor == "cls"

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
        r_list = merge_schedule(len(selection.frames), n, self.budget)
        # all kept frames at once, token 0 dropped (skip=1): [T', p', D]
        merged, cells = merge_frames_tracked(features, selection.frames, r_list, self.reduce, skip=1)
        # one reduction pass instead of isfinite's several full-size temporaries (~6x faster on
        # CPU): any NaN or inf makes the sum non-finite; fp16/bf16 are summed in fp32 so that
        # finite values cannot overflow into a false alarm.
        wide = torch.float32 if merged.dtype in (torch.float16, torch.bfloat16) else merged.dtype
        if not bool(torch.isfinite(merged.sum(dtype=wide))):
            raise ValueError("the kept frames' features contain NaN or inf")
        per_frame = merged.shape[1]
        return Reduction(
            tokens=merged.reshape(-1, d),                        # frames in time order
            frames_kept=selection.frames,
            tokens_per_frame=[per_frame] * len(selection.frames),
            info={"selection": selection, "r_list": r_list,
                  "r_effective": effective_r(n - 1, r_list)},
            positions=cell_positions(torch.tensor(selection.frames, device=cells.device)[:, None],
                                     cells, grid[1]),
        )
