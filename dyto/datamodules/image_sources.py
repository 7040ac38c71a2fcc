"""Video sources that are not video streams: a folder of frame images and an animated GIF.

Both return ``(frames uint8 [T,H,W,3], indices, total frames, fps)``; ``video.decode_video`` wraps
them like its stream decoders. ``choose(total, fps, times)`` picks the indices, with ``times[i]``
the display time of frame i where the source knows it (``video._window_indices``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from dyto.datamodules.paths import IMAGE_EXTENSIONS, VideoError

__all__ = ["frame_files", "read_frame_folder", "read_gif"]

Decoded = tuple[np.ndarray, list[int], int, float]
# GIF delays below 20 ms are shown as 100 ms by browsers and by FFmpeg's GIF demuxer; so here too.
GIF_MIN_DELAY_MS, GIF_DEFAULT_DELAY_MS = 20, 100


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise VideoError("video_unreadable", "decoding took longer than its time limit; gave up")


def frame_files(path: Path) -> list[Path]:
    """The frame images of a folder in frame order: by the number in their names when every name is
    a number (``1.jpg`` before ``10.jpg``; MVBench's ``00001.jpg``), else by name."""
    files = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
    if files and all(p.stem.isdigit() for p in files):
        return sorted(files, key=lambda p: (int(p.stem), p.name))
    return sorted(files)


def read_frame_folder(path: Path, choose: Callable[..., list[int]], deadline: float, fps: float = 0.0) -> Decoded:
    """A folder of frame images. With numbered names and a frame rate, image ``k`` shows at k/fps
    (MVBench's TVQA frames start at ``00001.jpg``, i.e. 1/3 s), so a window picks the same images
    whatever the first number is."""
    files = frame_files(path)
    if not files:
        raise VideoError("video_unreadable", f"{path} holds no frame images ({', '.join(IMAGE_EXTENSIONS)})")
    numbered = all(p.stem.isdigit() for p in files)
    indices = choose(len(files), fps, [int(p.stem) / fps for p in files] if numbered and fps > 0 else None)
    frames = []
    for i in indices:
        _check(deadline)
        with Image.open(files[i]) as im:
            frames.append(np.asarray(im.convert("RGB")))
    if len({f.shape for f in frames}) > 1:
        raise VideoError("video_unreadable", f"frame images of different sizes in {path}")
    return np.stack(frames), indices, len(files), fps


def read_gif(path: Path, choose: Callable[..., list[int]], deadline: float) -> Decoded:
    """An animated GIF with Pillow: every frame composed over the previous ones (disposal and
    partial frames handled by Pillow, identical to FFmpeg's GIF decoder on the GIFs we tried),
    frame i shown at the sum of the delays before it; ``fps`` is frames / total duration."""
    with Image.open(path) as im:
        if im.format != "GIF":
            raise VideoError("video_unreadable", f"not a GIF but {im.format}")
        total = getattr(im, "n_frames", 1)
        delays = []
        for i in range(total):
            im.seek(i)
            delay = im.info.get("duration") or 0
            delays.append(GIF_DEFAULT_DELAY_MS if delay < GIF_MIN_DELAY_MS else delay)
        times = np.concatenate([[0.0], np.cumsum(delays[:-1]) / 1000.0]).tolist()
        fps = total / (sum(delays) / 1000.0)
        indices = choose(total, fps, times)
        out = {}
        for i in sorted(set(indices)):  # ascending: Pillow composes forward without rewinding
            _check(deadline)
            im.seek(i)
            out[i] = np.asarray(im.convert("RGB"))
    return np.stack([out[i] for i in indices]), indices, total, fps
