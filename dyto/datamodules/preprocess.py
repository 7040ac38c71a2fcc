"""How a backbone wants its frames: the seam between the data side and the model side.

A backbone owns a ``Preprocessing`` (size, resize rule, mean/std, frames per temporal patch); the
DataModule applies it in its workers, so frames arrive as the tensor the vision tower reads.
It is a frozen, picklable dataclass so DataLoader workers can carry it, and ``config()`` is what
the run fingerprint records.

Some rules give every video its own size: ``qwen_smart_resize`` / ``qwen3_smart_resize``
(``protocol: lmms_eval``, :mod:`dyto.datamodules.lmms_frames`: qwen-vl-utils' aspect-keeping
resize for Qwen2.5-VL / Qwen3-VL), ``internvl_tiles`` (InternVL: a frame's tiles stacked along the
height) and ``qwen3_processor`` (Qwen3-VL's own video processor: ``smart_resize`` with a pixel
budget over the whole clip, ``min_pixels`` / ``max_pixels`` = its ``size`` shortest / longest edge).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from dyto.datamodules.lmms_frames import qwen3_video_size, qwen_nframes, qwen_video_size, tile_frames
from dyto.datamodules.video import CLIP_MEAN, CLIP_STD, normalisation_table, preprocess_frames

__all__ = ["Preprocessing", "RESIZE_RULES"]

RESIZE_RULES = ("squash_bicubic", "shortest_edge_center_crop", "qwen_smart_resize", "qwen3_smart_resize",
                "qwen3_processor", "internvl_tiles")
# fields only some rules use: left out of config() while unset, so older fingerprints stay the same
_OPTIONAL = ("min_pixels", "max_pixels", "max_tiles")


@dataclass(frozen=True)
class Preprocessing:
    """uint8 frames ``[T,H,W,3]`` -> float pixels ``[T,3,H',W']`` for one backbone.

    Args:
        size: output (height, width) for the squash rules; the tile side for ``internvl_tiles``.
        resize: ``squash_bicubic`` = the LLaVA reference's ``resize`` path (PIL bicubic squash to
            ``size``, aspect ratio ignored, x/255 in float64, then float32 normalisation);
            ``shortest_edge_center_crop`` = the CLIP image processor's (shortest side to ``size``,
            PIL bicubic, centre crop to ``size``: LLaVA-NeXT's original checkpoints);
            ``qwen_smart_resize`` = qwen-vl-utils' video resize with ``min_pixels`` / ``max_pixels``
            (needs the video's frame count and rate); ``qwen3_smart_resize`` its 0.0.14 version for
            Qwen3-VL; ``qwen3_processor`` = Qwen3-VL's video processor (transformers'
            ``smart_resize``: sides multiples of 32, T*H*W between ``min_pixels`` and ``max_pixels``,
            PIL bicubic instead of torchvision's); ``internvl_tiles`` = InternVL's dynamic tiles,
            at most ``max_tiles`` plus a thumbnail, stacked along H.
        mean, std: per-channel normalisation.
        frames_per_patch: frames the vision tower folds into one temporal patch (2 for
            Qwen2.5-VL); the data side samples a multiple of it.
    """

    size: tuple[int, int] = (336, 336)
    resize: str = "squash_bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    frames_per_patch: int = 1
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_tiles: int | None = None

    def __post_init__(self):
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {self.resize!r}; expected one of {RESIZE_RULES}")
        if self.frames_per_patch < 1:
            raise ValueError(f"frames_per_patch must be >= 1, got {self.frames_per_patch}")
        if self.resize in ("qwen_smart_resize", "qwen3_smart_resize", "qwen3_processor") and not (
                self.min_pixels and self.max_pixels):
            raise ValueError(f"{self.resize} needs min_pixels and max_pixels")
        if self.resize == "internvl_tiles" and not (self.max_tiles and self.max_tiles >= 1):
            raise ValueError("internvl_tiles needs max_tiles >= 1")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def __call__(self, frames: np.ndarray, total_frames: int | None = None, fps: float | None = None) -> torch.Tensor:
        """``frames`` uint8 ``[T,H,W,3]``; ``total_frames`` / ``fps``: the video's (``qwen_smart_resize``
        sizes frames by the clip's length; other rules ignore them)."""
        h, w = self.size
        if self.resize == "squash_bicubic":
            if h != w:
                raise ValueError(f"squash_bicubic needs a square size, got {self.size}")
            return preprocess_frames(frames, h, self.mean, self.std)
        if self.resize == "shortest_edge_center_crop":
            return _normalise(_center_crops(frames, h, w), self.mean, self.std)
        if self.resize == "qwen_smart_resize":
            if total_frames is None or fps is None:
                raise ValueError("qwen_smart_resize needs the video's total_frames and fps")
            nframes = qwen_nframes(total_frames, fps)
            h, w = qwen_video_size(frames.shape[1], frames.shape[2], nframes, self.min_pixels, self.max_pixels)
            return _normalise(_resize_all(frames, (h, w)), self.mean, self.std)
        if self.resize == "qwen3_processor":          # Qwen3VLVideoProcessor.resize: a budget for the whole clip
            from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize as clip_resize

            h, w = clip_resize(frames.shape[0], frames.shape[1], frames.shape[2], temporal_factor=self.frames_per_patch,
                               factor=32, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            return _normalise(_resize_all(frames, (h, w)), self.mean, self.std)
        if self.resize == "qwen3_smart_resize":       # Qwen3-VL: the budget from the frames sampled
            h, w = qwen3_video_size(frames.shape[1], frames.shape[2], frames.shape[0], self.min_pixels, self.max_pixels)
            return _normalise(_resize_all(frames, (h, w)), self.mean, self.std)
        return _normalise(np.stack(tile_frames(frames, self.max_tiles, h)), self.mean, self.std)

    def config(self) -> dict:
        """Plain values for the run fingerprint."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if not (k in _OPTIONAL and v is None)}


def _resize_all(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size
    return np.stack([np.asarray(Image.fromarray(f).convert("RGB").resize((w, h), Image.BICUBIC)) for f in frames])


def _center_crops(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """CLIPImageProcessor: shortest side to ``height`` (the long side ``int(height * long / short)``),
    PIL bicubic, then the centre ``height x width`` (top-left at ``(size - crop) // 2``)."""
    from PIL import Image

    out = []
    for frame in frames:
        h, w = frame.shape[:2]
        short, long = min(h, w), max(h, w)
        new_short, new_long = height, int(height * long / short)
        nh, nw = (new_short, new_long) if h <= w else (new_long, new_short)
        image = np.asarray(Image.fromarray(frame).convert("RGB").resize((nw, nh), Image.BICUBIC))
        top, left = (nh - height) // 2, (nw - width) // 2
        out.append(image[top:top + height, left:left + width])
    return np.stack(out)


def _normalise(frames: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 ``[T,H,W,3]`` -> float32 ``[T,3,H,W]`` with the processors' arithmetic (a table lookup)."""
    table = normalisation_table(mean, std)
    out = np.empty((frames.shape[0], 3, frames.shape[1], frames.shape[2]), dtype=np.float32)
    for c in range(3):
        out[:, c] = table[c][frames[..., c]]
    return torch.from_numpy(out)
