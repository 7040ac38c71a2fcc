"""VidCom² (Liu et al., EMNLP 2025, arXiv 2505.14454): frame-uniqueness budgets, outlier tokens.

As the public ``vidcom2_compression`` (LLaVA-OneVision path):
1. the half of the channels with the lowest variance over all the video's tokens is kept, and
   every token is L2-normalised on those channels;
2. each token is scored against the video centre (mean of all tokens) and its frame centre
   (mean of the frame's tokens) with a multi-scale Gaussian kernel,
   ``sum_a exp(-|x - c|^2 / (2a))`` for a in {1/8, 1/4, 1/2, 1, 2};
3. **frame budgets** (paper §3.2): a frame's uniqueness is minus the mean of its tokens' video
   scores; ``p = softmax((u - max u) / 0.01)`` over frames and frame t keeps
   ``round(N * base * (1 + p_t - mean p))`` tokens (at most N, at least 1);
4. **token selection** (§3.3): a frame keeps its tokens with the *lowest* video + frame score
   (the most distinctive ones), in cell order.

Nothing is left out (VidCom² runs entirely before the LLM); the score is computed on the
projected patch features the dyto contract carries, as the public code does on LLaVA-OV's.
Run: ``build_reducer("vidcom2", retention=0.25)(features [T, N, D], grid)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import allocate

__all__ = ["VidCom2Reducer", "vidcom2_scores"]

KERNEL_WIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)    # the public code's 2**k, k = -3..1


def vidcom2_scores(features: Tensor, channel_ratio: float = 0.5) -> tuple[Tensor, Tensor]:
    """(video score [T, N], frame score [T, N]) of every token (higher = closer to the centre)."""
    t, n, d = features.shape
    flat = features.reshape(t * n, d)
    keep = max(1, int(d * channel_ratio))
    channels = flat.float().var(dim=0, unbiased=False).topk(keep, largest=False).indices
    x = F.normalize(flat[:, channels].float(), dim=-1).view(t, n, keep)      # [T, N, D']
    video_centre = x.mean(dim=(0, 1))                                          # [D']
    frame_centre = x.mean(dim=1)                                               # [T, D']
    # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c with |x| = 1, without a [T, N, D'] difference
    to_video = (1 + video_centre.square().sum() - 2 * x @ video_centre).clamp(min=0)
    to_frame = (1 + frame_centre.square().sum(-1, keepdim=True)
                - 2 * torch.einsum("tnd,td->tn", x, frame_centre)).clamp(min=0)

    def kernel(dist_sq: Tensor) -> Tensor:
        return sum(torch.exp(-dist_sq / (2 * a)) for a in KERNEL_WIDTHS)

    return kernel(to_video), kernel(to_frame)


@register_reducer("vidcom2")
class VidCom2Reducer(TokenReducer):
    """VidCom²: more tokens for unique frames, the most distinctive tokens in each frame.

    Args:
        num_frames: frames sampled (paper §4.1: 32 for LLaVA-OneVision).
        temperature: softmax temperature of the frame budgets (0.01, public code).
        channel_ratio: share of lowest-variance channels scored (0.5, public code).
        target_tokens / retention: budget. Neither set: the public ``base_scale`` 0.25 with its
            per-frame rounding (about 25%). Either set: the target is split over the frames in
            proportion to ``1 + p_t - mean p``, at most N and at least 1 each, so the count is
            **exact** for T <= target <= T*N.
    """

    exact_budget = True

    def __init__(self, num_frames: int = 32, temperature: float = 0.01, channel_ratio: float = 0.5,
                 target_tokens: int | None = None, retention: float | None = None):
        if num_frames < 1 or temperature <= 0 or not 0.0 < channel_ratio <= 1.0:
            raise ValueError(f"need num_frames >= 1, temperature > 0, channel_ratio in (0, 1]; "
                             f"got {num_frames}, {temperature}, {channel_ratio}")
        check_budget(target_tokens, retention)
        self.num_frames, self.temperature, self.channel_ratio = num_frames, temperature, channel_ratio
        self.target_tokens, self.retention = target_tokens, retention

    def __call__(self, features: Tensor, grid: tuple[int, int],
                 cls: Tensor | None = None) -> Reduction:
        t, n, d = check_features(features, grid)
        video, frame = vidcom2_scores(features, self.channel_ratio)            # [T, N] each
        uniqueness = -video.mean(dim=1)                                        # [T]
        probs = torch.softmax((uniqueness - uniqueness.max()) / self.temperature, dim=0)
        weights = 1 + probs - probs.mean()                                     # [T]
        target = self.target_for(t, n)
        if target is None:
            shares = (n * (0.25 * weights).clamp(max=1.0)).round().long().clamp(min=1).tolist()
        else:
            shares = allocate(target, weights.tolist(), caps=[n] * t, minimum=1)
        score = video + frame
        rows, positions = [], []
        for f, k in enumerate(shares):
            cells = score[f].topk(k, largest=False).indices.sort().values    # most distinctive
            rows.append(f * n + cells)
            positions.append(cell_positions(torch.tensor(f, device=features.device), cells, grid[1]))
        return Reduction(
            tokens=features.reshape(t * n, d).index_select(0, torch.cat(rows)),
            frames_kept=list(range(t)),
            tokens_per_frame=shares,
            info={"frame_weights": weights.tolist()},
            positions=torch.cat(positions),
        )
