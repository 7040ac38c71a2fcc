"""Qwen2.5-VL's pixel layout and its 3-D M-RoPE positions (no model weights here).

* :func:`patchify` lays frames out as ``Qwen2VLVideoProcessor.patchify`` does: pairs of frames
  (an odd count is padded by repeating the last frame, as the processor does), 14-px patches in
  2x2 merge blocks, one row of ``3 * 2 * 14 * 14`` values per patch.
* :func:`mrope_positions` gives the ``[3, S]`` (temporal, height, width) ids of a prompt with one
  video block: text before it counts 0, 1, ...; each visual token sits at ITS OWN cell
  ``(t, row, col)`` of the full video grid, using the model's own ``get_vision_position_ids``
  (temporal ids ``floor(t * tokens_per_second * second_per_grid_t)``); the text after it starts
  by one of two rules (see ``TEXT_AFTER_VIDEO``), measured over the full video or over the kept
  tokens (``TEXT_POSITIONS``).

Run its tests: ``pytest -q tests/test_backbone_qwen2_5_vl.py``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["TEXT_AFTER_VIDEO", "TEXT_POSITIONS", "VIDEO_PAD", "patchify", "grid_positions", "mrope_positions"]

# "max_plus_one": the text after the video starts one past the largest id of any visual token,
#   over all three axes: the get_rope_index Qwen2.5-VL was released with (transformers 4.49 up to
#   5.2). The default. With a reduced sequence the largest id is over the tokens kept.
# "transformers": start + max(h, w) of the merged grid, ignoring the temporal axis: what the
#   installed transformers 5.x get_rope_index does. The two agree while the temporal ids stay
#   below max(h, w), i.e. for short clips; past that, transformers 5.x makes the text positions
#   overlap the video's temporal ids.
TEXT_AFTER_VIDEO = ("max_plus_one", "transformers")
# With "max_plus_one", whose largest id: "full" (default): the unreduced video's, i.e. the ids the
#   full sequence gives the text, as the peers that prune Qwen2.5-VL's video (VidCom², FastVID)
#   index the full sequence's position ids; "kept": the largest id among the tokens kept.
TEXT_POSITIONS = ("full", "kept")
VIDEO_PAD = "<|video_pad|>"  # what the chat template writes (between the vision markers) where the video goes


def patchify(pixels: Tensor, patch_size: int = 14, merge_size: int = 2,
             temporal_patch_size: int = 2) -> tuple[Tensor, tuple[int, int, int]]:
    """``[T, C, H, W]`` -> (``[T' * gh * gw, C * tp * p * p]``, grid_thw ``(T', gh, gw)`` in patches).

    Rows are ordered (temporal patch, merge-block row, merge-block column, row in block, column
    in block); each row is (channel, frame in pair, y, x), which is what the vision tower's
    Conv3d patch embedding reads. ``T`` not a multiple of ``temporal_patch_size`` is padded with
    copies of the last frame.
    """
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be [T, C, H, W], got shape {tuple(pixels.shape)}")
    t, c, h, w = pixels.shape
    unit = patch_size * merge_size
    if t == 0 or h % unit or w % unit:
        raise ValueError(f"pixels {tuple(pixels.shape)}: need T >= 1 and H, W multiples of {unit}")
    if pad := -t % temporal_patch_size:
        pixels = torch.cat([pixels, pixels[-1:].expand(pad, -1, -1, -1)])
        t += pad
    gt, gh, gw = t // temporal_patch_size, h // patch_size, w // patch_size
    x = pixels.reshape(gt, temporal_patch_size, c, gh // merge_size, merge_size, patch_size,
                       gw // merge_size, merge_size, patch_size)
    # -> [gt, block row, block col, row in block, col in block, C, tp, p, p]
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * temporal_patch_size * patch_size * patch_size), (gt, gh, gw)


def grid_positions(frames: Sequence[int], grid: tuple[int, int], device=None) -> Tensor:
    """``[len(frames) * h * w, 3]`` (frame, row, col) of whole frames in raster order."""
    h, w = grid
    f = torch.as_tensor(list(frames), dtype=torch.long, device=device)
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    cells = torch.stack([rows.flatten(), cols.flatten()], dim=1)                       # [h*w, 2]
    return torch.cat([f.repeat_interleave(h * w)[:, None], cells.repeat(len(f), 1)], dim=1)


def mrope_positions(model, n_before: int, visual: Tensor, grid: tuple[int, int], n_after: int,
                    second_per_grid_t: float, text_after: str = "max_plus_one", text_positions: str = "full",
                    input_frames: int | None = None) -> Tensor:
    """``[3, n_before + L + n_after]`` M-RoPE ids for text, L visual tokens at ``visual``, text.

    ``visual`` is ``[L, 3]`` (temporal patch, row, col) in the merged grid ``(h, w)``. ``model``
    is the ``Qwen2_5_VLModel`` (``.model`` of the generation class): its own
    ``get_vision_position_ids`` computes the full grid's ids, so a token at cell (t, r, c) gets
    exactly the ids the model's video path gives that cell; a reduced sequence only leaves cells
    out (or repeats a merge destination's cell). ``input_frames``: the unreduced video's temporal
    patches (``Reduction.input_frames``), needed for ``text_positions="full"``.
    """
    if text_after not in TEXT_AFTER_VIDEO:
        raise ValueError(f"unknown text_after {text_after!r}; expected one of {TEXT_AFTER_VIDEO}")
    if text_positions not in TEXT_POSITIONS:
        raise ValueError(f"unknown text_positions {text_positions!r}; expected one of {TEXT_POSITIONS}")
    h, w = grid
    merge = model.config.vision_config.spatial_merge_size
    interval = model.config.vision_config.tokens_per_second * second_per_grid_t
    device = visual.device
    before = torch.arange(n_before, device=device).expand(3, -1)
    kept = int(visual[:, 0].max()) + 1 if len(visual) else 0
    full = text_after == "max_plus_one" and text_positions == "full"
    if full and input_frames is None:
        raise ValueError("text_positions 'full' needs the unreduced video's length (Reduction.input_frames); "
                         "set it in the reducer or use text_positions: kept")
    frames = max(kept, input_frames or 0)
    table = model.get_vision_position_ids(n_before, torch.tensor([frames, h * merge, w * merge]), 1, merge,
                                          interval, device=device)                 # [3, frames*h*w]
    ids = table[:, (visual[:, 0] * h + visual[:, 1]) * w + visual[:, 2]]              # [3, L]
    if text_after == "transformers" or not frames or (not full and not len(visual)):
        start = n_before + max(h, w)
    else:                                             # one past the full video's or the kept ids
        start = int((table if full else ids).max()) + 1
    after = torch.arange(n_after, device=device).expand(3, -1) + start
    return torch.cat([before, ids, after], dim=1)
