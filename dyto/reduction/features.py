"""Deterministic stand-in patch features, for demos and tests that have no CLIP weights.

Frames that look alike get similar features (the map is linear in the pixels), so clustering and
merging behave sensibly on real video, but nothing here is a learned representation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pixel_patch_features"]


def pixel_patch_features(pixels: Tensor, grid: int = 24, dim: int = 256, patch: int = 4,
                         seed: int = 0) -> Tensor:
    """pixels [T, 3, H, W] float -> features [T, grid*grid, dim], raster patch order.

    Each frame is average-pooled to (grid*patch)^2 pixels, cut into grid x grid patches of
    patch x patch x 3 values, and every patch is projected with one fixed Gaussian matrix drawn
    from ``torch.Generator().manual_seed(seed)`` (on the CPU, so every device gets the same one).
    ``dim`` must be divisible by 16, as DyTo's merge metric requires.
    """
    if pixels.ndim != 4 or pixels.shape[1] != 3 or pixels.shape[0] == 0:
        raise ValueError(f"pixels must be [T, 3, H, W] with T >= 1, got {tuple(pixels.shape)}")
    if dim % 16 or dim <= 0:
        raise ValueError(f"dim must be a positive multiple of 16, got {dim}")
    if grid < 1 or patch < 1:
        raise ValueError(f"grid and patch must be >= 1, got {grid}, {patch}")
    side = grid * patch
    image = F.adaptive_avg_pool2d(pixels.float(), side)                       # [T, 3, side, side]
    patches = F.unfold(image, kernel_size=patch, stride=patch).transpose(1, 2)  # [T, g*g, 3*p*p]
    fan_in = patches.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(fan_in, dim, generator=generator) / math.sqrt(fan_in)  # [3*p*p, dim]
    return patches @ projection.to(patches.device)                            # [T, g*g, dim]
