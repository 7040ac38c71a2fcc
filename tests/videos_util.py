"""Synthetic test videos whose frames say which frame they are.

Each frame has a black band on top holding a white bar `index` pixels wide (so a decoded frame can
be checked against the index that was asked for) over a colour that changes every `scene_len`
frames. Written (near-)losslessly so the bar survives compression exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEMO_CLIPS = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "demo"  # real clips shipped with the package
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # QA sheets copied into the repo (fixtures/qa/SOURCES.md)
SCENE_COLOURS = [(200, 30, 30), (30, 160, 40), (40, 60, 200), (180, 160, 20), (150, 40, 160), (20, 150, 150)]
BAND = 8  # rows of the index band


def make_frame(index: int, width: int, height: int, scene_len: int = 15) -> np.ndarray:
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = SCENE_COLOURS[(index // scene_len) % len(SCENE_COLOURS)]
    frame[:BAND] = 0
    frame[:BAND, :index] = 255
    return frame


def write_video(path: Path, num_frames: int, width: int = 128, height: int = 64, fps: int = 30,
                gop: int = 12, bframes: int = 0) -> Path:
    """An H.264 MP4 with a keyframe every `gop` frames (so seeking is exercised), optionally B-frames
    (decode order != presentation order)."""
    import av

    if num_frames > width:
        raise ValueError("the index bar needs width >= num_frames")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        # x264 makes no B-frames when lossless (qp 0), so a B-frame video is near-lossless (qp 1).
        stream.options = {"qp": "1" if bframes else "0", "preset": "ultrafast", "g": str(gop),
                          "keyint_min": str(gop), "bf": str(bframes), "b-adapt": "0"}
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(make_frame(i, width, height), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def write_gif(path: Path, num_frames: int, width: int = 64, height: int = 32) -> Path:
    from PIL import Image

    images = [Image.fromarray(make_frame(i, width, height, scene_len=4)) for i in range(num_frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def write_frame_dir(path: Path, num_frames: int, width: int = 64, height: int = 32) -> Path:
    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        Image.fromarray(make_frame(i, width, height)).save(path / f"{i:05d}.png")
    return path


def read_index(frame: np.ndarray) -> int:
    """The index a frame shows: the length of its white bar."""
    row = frame[BAND // 2].astype(int).sum(axis=1)
    return int((row > 3 * 128).sum())
