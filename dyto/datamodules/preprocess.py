"""How a backbone wants its frames: the seam between the data side and the model side.

A backbone owns a ``Preprocessing`` (size, resize rule, mean/std, frames per temporal patch); the
DataModule applies it in its workers, so frames arrive as the tensor the vision tower reads.
It is a frozen, picklable dataclass so DataLoader workers can carry it, and ``config()`` is what
the run fingerprint records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from dyto.datamodules.video import CLIP_MEAN, CLIP_STD, preprocess_frames

__all__ = ["Preprocessing", "RESIZE_RULES"]

RESIZE_RULES = ("squash_bicubic",)


@dataclass(frozen=True)
class Preprocessing:
    """uint8 frames ``[T,H,W,3]`` -> float pixels ``[T,3,H',W']`` for one backbone.

    Args:
        size: output (height, width) for the squash rules.
        resize: ``squash_bicubic`` = the LLaVA reference's ``resize`` path (PIL bicubic squash to
            ``size``, aspect ratio ignored, x/255 in float64, then float32 normalisation).
        mean, std: per-channel normalisation.
        frames_per_patch: frames the vision tower folds into one temporal patch (2 for
            Qwen2.5-VL); the data side samples a multiple of it.
    """

    size: tuple[int, int] = (336, 336)
    resize: str = "squash_bicubic"
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    frames_per_patch: int = 1

    def __post_init__(self):
        if self.resize not in RESIZE_RULES:
            raise ValueError(f"unknown resize rule {self.resize!r}; expected one of {RESIZE_RULES}")
        if self.frames_per_patch < 1:
            raise ValueError(f"frames_per_patch must be >= 1, got {self.frames_per_patch}")
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        h, w = self.size
        if h != w:
            raise ValueError(f"squash_bicubic needs a square size, got {self.size}")
        return preprocess_frames(frames, h, self.mean, self.std)

    def config(self) -> dict:
        """Plain values for the run fingerprint."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
