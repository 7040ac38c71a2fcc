"""Frames as lmms-eval's model files take them (``protocol: lmms_eval``): sampling and resolution.

Sampling rules (``sample_frame_indices(total, n, method, fps)`` dispatches here), each written
from the file that uses it, EvolvingLMMs-Lab/lmms-eval@75571cfe ``lmms_eval/models/simple/``:

* ``linspace``: ``np.linspace(0, total - 1, n, dtype=int)`` (``llava_onevision.py`` ``load_video``;
  a clip shorter than ``n`` frames repeats frames).
* ``internvl_segments``: the middle of ``n`` equal segments, ``int(seg / 2 + round(seg * i))`` with
  ``seg = (total - 1) / n`` (``internvl3.py`` ``get_index``, no time bound).
* ``fps_then_linspace``: one frame per second (every ``round(fps)``-th frame); more than ``n`` of
  them: ``linspace`` instead (``llava_vid.py`` ``load_video``, ``video_fps=1``, no forced sampling).
* ``qwen_fps``: qwen-vl-utils 0.0.10 (QwenLM/Qwen2.5-VL@f0af2996, ``vision_process.py``) samples
  ``smart_nframes`` frames (2 fps, at least 4, at most 768, even) with
  ``torch.linspace(...).round()``; ``qwen2_5_vl.py`` then keeps ``np.linspace(0, k - 1, n,
  dtype=int)`` of those (unique, the last one always included).
* ``qwen_nframes``: ``qwen3_vl.py`` asks qwen-vl-utils 0.0.14 (QwenLM/Qwen3-VL@9658872,
  ``vision_process.py`` 144-181, 292-329) for ``nframes = n`` (rounded to even):
  ``torch.linspace(0, total - 1, n).round()``; a clip of fewer frames fails there, here it gives
  its own length (even, at least 2: a one-frame clip repeats it).

Resolution rules (``Preprocessing.resize``):

* ``qwen_smart_resize``: qwen-vl-utils' ``fetch_video``: a pixel budget per frame of
  ``max(min(768*28*28, VIDEO_TOTAL_PIXELS / k * 2), 1.05 * min_pixels)`` capped by ``max_pixels``
  (k: the frames it sampled, before lmms-eval keeps 32), then ``smart_resize`` (aspect kept,
  sides multiples of 28). Changed: PIL bicubic on uint8 frames instead of torchvision's
  antialiased bicubic on a float tensor (last-digit rounding).
* ``qwen3_smart_resize``: qwen-vl-utils 0.0.14's ``fetch_video`` for Qwen3-VL (patch 16, so sides
  multiples of 32): a budget per frame of ``max(min(768*32*32, total_pixels / k * 2), 1.05 *
  min_pixels)`` (``total_pixels`` 128000*32*32*0.9), capped by the ``max_pixels`` given, then
  ``smart_resize``; k = the frames sampled. The same PIL-for-torchvision change as above.
* ``internvl_tiles``: ``dynamic_preprocess`` with ``max_num`` tiles of the tower's size (the
  closest aspect ratio among i x j <= max_num) plus a thumbnail when there is more than one,
  stacked along the height: ``[T, 3, k * S, S]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

__all__ = ["LMMS_SAMPLING", "lmms_frame_indices", "qwen_nframes", "qwen_video_size", "qwen3_video_size", "smart_resize",
           "tile_grid", "tile_frames"]

LMMS_SAMPLING = ("linspace", "internvl_segments", "fps_then_linspace", "qwen_fps", "qwen_nframes")

# qwen-vl-utils 0.0.10 constants (vision_process.py lines 24-40)
FACTOR, FRAME_FACTOR, QWEN_FPS, FPS_MIN_FRAMES, FPS_MAX_FRAMES = 28, 2, 2.0, 4, 768
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)
MAX_RATIO = 200


def qwen_nframes(total: int, video_fps: float) -> int:
    """qwen-vl-utils ``smart_nframes`` with its defaults: 2 fps, clamped to [4, min(768, total)], even."""
    if video_fps <= 0:
        raise ValueError("qwen_fps sampling needs the video's frame rate, and this input has none")
    min_frames = math.ceil(FPS_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    max_frames = math.floor(min(FPS_MAX_FRAMES, total) / FRAME_FACTOR) * FRAME_FACTOR
    nframes = min(min(max(total / video_fps * QWEN_FPS, min_frames), max_frames), total)
    nframes = math.floor(nframes / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= nframes <= total:
        raise ValueError(f"qwen_fps sampling: nframes should be in [{FRAME_FACTOR}, {total}], got {nframes}")
    return nframes


def lmms_frame_indices(total: int, n: int, method: str, fps: float | None = None) -> list[int]:
    """Indices of the frames lmms-eval's model file reads out of ``total`` (module docstring)."""
    if method == "linspace":
        return np.linspace(0, total - 1, n, dtype=int).tolist()
    if method == "internvl_segments":
        seg = float(total - 1) / n
        return [int(seg / 2 + np.round(seg * i)) for i in range(n)]
    if method == "fps_then_linspace":
        step = max(1, round((fps or 0.0) / 1))  # llava_vid: round(avg_fps / video_fps); 0 would not run there
        picked = list(range(0, total, step))
        return picked if len(picked) <= n else np.linspace(0, total - 1, n, dtype=int).tolist()
    if method == "qwen_fps":
        k = qwen_nframes(total, fps or 0.0)
        sampled = torch.linspace(0, total - 1, k).round().long().tolist()
        keep = np.unique(np.linspace(0, k - 1, n, dtype=int))
        if k - 1 not in keep:
            keep = np.unique(np.append(keep, k - 1))
        return [sampled[i] for i in keep]
    if method == "qwen_nframes":                   # qwen-vl-utils 0.0.14 smart_nframes with nframes given
        k = max(FRAME_FACTOR, round(n / FRAME_FACTOR) * FRAME_FACTOR)
        if k > total:                              # upstream raises here; the clip's even length instead
            k = max(FRAME_FACTOR, total // FRAME_FACTOR * FRAME_FACTOR)
        return torch.linspace(0, total - 1, k).round().long().tolist()
    raise ValueError(f"unknown lmms-eval sampling rule {method!r}; expected one of {LMMS_SAMPLING}")


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> tuple[int, int]:
    """qwen-vl-utils ``smart_resize``: sides multiples of ``factor``, area within the budget, aspect kept."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {max(height, width) / min(height, width)}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_video_size(height: int, width: int, nframes: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) ``fetch_video`` resizes a clip of ``nframes`` sampled frames to (lmms-eval passes
    ``min_pixels`` and ``max_pixels`` in the video item; ``total_pixels`` keeps its default)."""
    budget = max(min(VIDEO_MAX_PIXELS, VIDEO_TOTAL_PIXELS / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return smart_resize(height, width, min_pixels, min(max_pixels, budget))


def qwen3_video_size(height: int, width: int, nframes: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(h, w) qwen-vl-utils 0.0.14's ``fetch_video`` gives ``nframes`` frames with ``image_patch_size=16``
    (``vision_process.py`` 403-473): the per-frame budget above, then ``smart_resize`` with factor 32."""
    factor = 16 * 2
    total = 128000 * factor * factor * 0.9                 # MODEL_SEQ_LEN's default
    budget = max(min(768 * factor * factor, total / nframes * FRAME_FACTOR), int(min_pixels * 1.05))
    return smart_resize(height, width, min_pixels, min(max_pixels, budget), factor=factor)


def tile_grid(width: int, height: int, max_num: int, size: int) -> tuple[int, int]:
    """(columns, rows) of InternVL's ``dynamic_preprocess``: the target ratio i x j <= max_num closest
    to the frame's aspect ratio (ties: the larger one when the frame has more than half its area)."""
    aspect = width / height
    ratios = sorted({(i, j) for n in range(1, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
                     if 1 <= i * j <= max_num}, key=lambda r: r[0] * r[1])
    best, best_diff = (1, 1), float("inf")
    for ratio in set(ratios):  # find_closest_aspect_ratio iterates a set built from that list, in set order
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best, best_diff = ratio, diff
        elif diff == best_diff and width * height > 0.5 * size * size * ratio[0] * ratio[1]:
            best = ratio
    return best


def tile_frames(frames: np.ndarray, max_num: int, size: int) -> list[np.ndarray]:
    """uint8 ``[T,H,W,3]`` -> per frame, uint8 ``[k * size, size, 3]``: its tiles top to bottom in
    ``dynamic_preprocess`` order (row-major over the tile grid), then the thumbnail if k > 1."""
    out = []
    for frame in frames:
        image = Image.fromarray(frame).convert("RGB")
        cols, rows = tile_grid(image.width, image.height, max_num, size)
        resized = image.resize((cols * size, rows * size))  # PIL's default filter: bicubic
        tiles = [resized.crop(((i % cols) * size, (i // cols) * size, (i % cols + 1) * size, (i // cols + 1) * size))
                 for i in range(cols * rows)]
        if len(tiles) != 1:
            tiles.append(image.resize((size, size)))
        out.append(np.concatenate([np.asarray(t) for t in tiles], axis=0))
    return out
