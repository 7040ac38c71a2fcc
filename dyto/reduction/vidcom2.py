"""VidCom² (Liu et al., EMNLP 2025, arXiv 2505.14454): frame-uniqueness budgets, outlier tokens.

Upstream: xuyang-liu16/VidCom2 @ 944a17d, ``token_compressor/vidcom2/vidcom2.py``. As its
``vidcom2_compression`` (the LLaVA-OneVision path):
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
projected patch features the dyto contract carries, as the public code does on LLaVA-OV's
(whose ``llava_ov`` spec fixes 196 tokens a frame; the same arithmetic runs on any grid here).
Only ``target_tokens`` / ``retention`` (matched budgets) are this project's.
Run: ``build_reducer("vidcom2", retention=0.25)(features [T, N, D], grid)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dyto.errors import check

from .assignment import Assignment
from .base import (Reduction, TokenReducer, cell_positions, check_budget, check_features,
                   register_reducer)
from .density import allocate

__all__ = ["VidCom2Reducer", "vidcom2_scores"]

KERNEL_WIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)    # the public code's 2**k, k = -3..1


def _squares_times(flat: Tensor, weight: Tensor | None, chunk: int = 4096) -> Tensor:
    """``flat**2`` summed over rows ([D], weight None) or times ``weight`` [D] per row ([M]).

    In row chunks through one reused buffer: at [57600, 4096] a strided ``var(dim=0)`` or a
    full-size ``flat**2`` is several times slower on the CPU than these matrix-vector products.
    """
    buf = torch.empty(min(chunk, len(flat)), flat.shape[1], dtype=torch.float32, device=flat.device)
    out = []
    for rows in flat.split(chunk):
        sq = torch.mul(rows, rows, out=buf[: len(rows)])
        out.append(sq.T @ torch.ones(len(rows), device=flat.device) if weight is None else sq @ weight)
    return torch.stack(out).sum(0) if weight is None else torch.cat(out)


def vidcom2_scores(features: Tensor, channel_ratio: float = 0.5) -> tuple[Tensor, Tensor]:
    """(video score [T, N], frame score [T, N]) of every token (higher = closer to the centre).

    The tokens are never copied: the selected channels are a 0/1 weight vector, so norms, centres
    and dot products on them are matrix-vector products over all channels.
    """
    t, n, d = features.shape
    flat = features.reshape(t * n, d).float()                                  # [M, D]
    ones = torch.ones(t * n, device=features.device)
    mean = ones @ flat / (t * n)                                               # [D]
    variance = _squares_times(flat, None) / (t * n) - mean.square()            # [D]
    keep = max(1, int(d * channel_ratio))
    mask = torch.zeros(d, device=features.device)
    mask[variance.topk(keep, largest=False).indices] = 1.0                     # [D] 0/1
    inv_norm = _squares_times(flat, mask).sqrt().clamp(min=1e-12).reciprocal()  # [M]
    # unit tokens u = x * mask * inv_norm; their centres and u.c without forming u
    video_centre = (inv_norm @ flat) * mask / (t * n)                          # [D]
    frame_centre = torch.einsum("tn,tnd->td", inv_norm.view(t, n), flat.view(t, n, d)) * mask / n
    to_video = 1 + video_centre.square().sum() - 2 * (flat @ video_centre) * inv_norm
    to_frame = (1 + frame_centre.square().sum(-1, keepdim=True)
                - 2 * torch.einsum("tnd,td->tn", flat.view(t, n, d), frame_centre) * inv_norm.view(t, n))

    def kernel(dist_sq: Tensor) -> Tensor:
        return sum(torch.exp(-dist_sq.clamp(min=0) / (2 * a)) for a in KERNEL_WIDTHS)

    return kernel(to_video.view(t, n)), kernel(to_frame)


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
            **exact** for T <= target <= T*N; below T, a ValueError.
    """

    exact_budget = True
    assigns = True

    def __init__(self, num_frames: int = 32, temperature: float = 0.01, channel_ratio: float = 0.5,
                 target_tokens: int | None = None, retention: float | None = None):
        check("num_frames", num_frames, ">=1")
        check("temperature", temperature, ">0")
        check("channel_ratio", channel_ratio, "(0,1]")
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
            shares = allocate(target, weights.tolist(), caps=[n] * t, minimum=1, budget_of="vidcom2")
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
            input_frames=t,
            assignment=Assignment.select(torch.cat(rows)),
        )
