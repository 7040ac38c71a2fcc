"""GIFs and folders of frame images as video sources (MVBench's and TGIF's layouts), on real files
written here: a GIF with uneven delays and partial frames, numbered frame folders with and without
zero padding, windows placed in both by their own display times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dyto.datamodules.video import VideoError, decode_video, frame_files, sample_frame_indices
from videos_util import make_frame, read_index, write_gif


def write_uneven_gif(path: Path, delays_ms: list[int]) -> Path:
    """Frames that show their index, with the given delays; Pillow's optimizer stores the later
    frames as partial rectangles, so the decoder has to compose them."""
    images = [Image.fromarray(make_frame(i, 64, 32, scene_len=50)) for i in range(len(delays_ms))]
    images[0].save(path, save_all=True, append_images=images[1:], duration=delays_ms, loop=0, optimize=True)
    return path


def write_numbered(path: Path, numbers: list[int], pad: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for k in numbers:
        Image.fromarray(make_frame(k, 64, 32)).save(path / f"{k:0{pad}d}.jpg", quality=100)
    return path


def test_gif_is_read_by_pillow_with_the_frames_pyav_gives(tmp_path):
    gif = write_uneven_gif(tmp_path / "g.gif", [40] * 10 + [100] * 10)
    auto, pyav = decode_video(gif, 8), decode_video(gif, 8, backend="pyav")
    assert auto.backend == "gif" and auto.total_frames == 20 and auto.indices == sample_frame_indices(20, 8)
    assert [read_index(f) for f in auto.frames] == auto.indices
    assert np.array_equal(auto.frames, pyav.frames)  # same pixels as FFmpeg's GIF decoder
    assert auto.fps == pytest.approx(20 / 1.4)


def test_gif_window_uses_each_frames_own_display_time(tmp_path):
    # frames 0-9 last 40 ms (shown at 0.00 .. 0.36 s), frames 10-19 last 100 ms (0.40 .. 1.30 s)
    gif = write_uneven_gif(tmp_path / "g.gif", [40] * 10 + [100] * 10)
    out = decode_video(gif, 100, window=(0.4, 0.9), method="unique")
    assert out.indices == list(range(10, 16))  # 0.4, 0.5, ... 0.9 s; i/fps would say 6..12
    assert [read_index(f) for f in out.frames] == out.indices
    with pytest.raises(VideoError, match="holds no frame"):
        decode_video(gif, 4, window=(5.0, 6.0))


def test_gif_delays_below_20ms_count_as_100ms(tmp_path):
    gif = write_gif(tmp_path / "fast.gif", 10)  # the helper writes 100 ms
    fast = tmp_path / "zero.gif"
    frames = [Image.fromarray(make_frame(i, 64, 32)) for i in range(10)]
    frames[0].save(fast, save_all=True, append_images=frames[1:], duration=10, loop=0)
    assert decode_video(fast, 4).fps == pytest.approx(10.0) == decode_video(gif, 4).fps


def test_frame_folder_order_is_numeric_and_windows_use_the_numbers(tmp_path):
    unpadded = write_numbered(tmp_path / "unpadded", list(range(1, 13)), pad=1)  # 1.jpg .. 12.jpg
    assert [p.stem for p in frame_files(unpadded)] == [str(k) for k in range(1, 13)]
    out = decode_video(unpadded, 12)
    assert [read_index(f) for f in out.frames] == [k + 1 for k in out.indices]  # never 1, 10, 11, 12, 2, ...
    # MVBench's TVQA frames: 00001.jpg .. at 3 fps, so 00003.jpg shows at 1.0 s
    tvqa = write_numbered(tmp_path / "tvqa", list(range(1, 31)), pad=5)
    win = decode_video(tvqa, 100, window=(1.0, 2.0), image_fps=3.0, method="unique")
    assert [read_index(f) for f in win.frames] == [3, 4, 5, 6] and win.fps == 3.0 and win.backend == "images"
    with pytest.raises(VideoError, match="needs a frame rate"):
        decode_video(tvqa, 8, window=(1.0, 2.0))  # a folder says nothing about its rate


def test_an_empty_frame_folder_is_unreadable(tmp_path):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("no images here")
    with pytest.raises(VideoError, match="holds no frame images") as e:
        decode_video(tmp_path / "none", 4)
    assert e.value.status == "video_unreadable"
