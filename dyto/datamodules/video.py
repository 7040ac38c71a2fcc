"""Frame sampling, video decoding and frame preprocessing (docs/method.md §2).

Decoding reads only the sampled frames: decord through `get_batch`, PyAV by seeking to the
keyframe before each wanted frame and decoding forward only as far as needed. GIFs are read
with Pillow (decord cannot size one), each frame at its own display time; a folder of frame
images is read in the order of its numbered names, at a frame rate the record gives (MVBench's
TVQA frames: 3 per second). Every failure becomes a `VideoError` carrying the decoder's own
message, and one video's decode is bounded in time, because a single bad file must never stop
or hang a multi-hour run.
"""

from __future__ import annotations

import bisect
import importlib.util
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from dyto.datamodules.image_sources import frame_files, read_frame_folder, read_gif
from dyto.datamodules.lmms_frames import LMMS_SAMPLING, lmms_frame_indices
from dyto.datamodules.paths import VideoError

__all__ = ["CLIP_MEAN", "CLIP_STD", "DecodedVideo", "SAMPLING_RULES", "VideoError", "decode_video", "frame_files",
           "preprocess_frames",
           "sample_frame_indices"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


SAMPLING_RULES = ("reference", "unique", *LMMS_SAMPLING)


def sample_frame_indices(total: int, n: int, method: str = "reference", fps: float | None = None) -> list[int]:
    """Indices of the frames to decode out of `total` (`fps`: the video's, for the rate-based rules).

    reference: SF-LLaVA/DyTo `get_seq_frames` exactly: desired = min(total, n), seg = (total-1)/desired,
        index k = (round(seg*k) + round(seg*(k+1))) // 2 with NumPy half-to-even rounding. On short
        videos (total <= n) it repeats a frame and never reaches the last one (3 -> [0, 1, 1]).
    unique: a fix, never the default: all frames if total <= n, else n evenly spaced distinct indices
        from the first to the last frame.
    linspace, internvl_segments, fps_then_linspace, qwen_fps: lmms-eval's model files
        (:mod:`dyto.datamodules.lmms_frames`); they may return fewer than `n` frames.
    """
    if total < 1 or n < 1:
        raise ValueError(f"need total >= 1 and n >= 1, got total={total}, n={n}")
    if method == "reference":
        desired = min(total, n)
        seg = float(total - 1) / desired
        bounds = np.round(seg * np.arange(desired + 1)).astype(np.int64)
        return ((bounds[:-1] + bounds[1:]) // 2).tolist()
    if method == "unique":
        if total <= n:
            return list(range(total))
        return np.round(np.linspace(0, total - 1, n)).astype(np.int64).tolist()
    if method in LMMS_SAMPLING:
        return lmms_frame_indices(total, n, method, fps)
    raise ValueError(f"unknown sampling method {method!r}; expected one of {SAMPLING_RULES}")


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [T, H, W, 3], RGB
    indices: list[int]  # the frame index of each row of `frames`
    total_frames: int  # frames in the whole video (not only the window)
    fps: float  # 0.0 for a directory of frame images
    backend: str  # "decord" | "pyav" | "images"


def _window_indices(total: int, fps: float, n: int, window: tuple[float, float] | None, method: str,
                   times: list[float] | None = None) -> list[int]:
    """Sample inside `window` (seconds) or over the whole video. Frame i shows at ``times[i]`` when
    given (a GIF's own delays, a frame folder's numbered names), else at i/fps."""
    if total < 1:
        raise VideoError("video_unreadable", "the video has no frames")
    lo, hi = 0, total - 1
    if window is not None:
        start, end = window
        if times is not None:
            # round() first, as below: a display time of 1.0000000002 s is 1 s.
            rounded = [round(t, 6) for t in times]
            lo, hi = bisect.bisect_left(rounded, round(start, 6)), bisect.bisect_right(rounded, round(end, 6)) - 1
        elif fps <= 0:
            raise VideoError("video_unreadable", f"a time window {window} needs a frame rate, and this input has none")
        else:
            # round() first: 11.1 * 30 = 333.00000000000006 must mean frame 333.
            lo = max(0, math.ceil(round(start * fps, 6)))
            hi = min(total - 1, math.floor(round(end * fps, 6)))
        if lo > hi:
            length = f"{times[-1]:.2f}s" if times is not None else f"{total / fps:.2f}s"
            raise VideoError("video_unreadable", f"window {start}-{end}s holds no frame of a "
                             f"{total}-frame video at {fps:g} fps ({length})")
    return [lo + i for i in sample_frame_indices(hi - lo + 1, n, method, fps)]


def _decode_decord(path: Path, choose: Callable[[int, float], list[int]], deadline: float) -> DecodedVideo:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    fps = float(vr.get_avg_fps())
    indices = choose(len(vr), fps)
    batch = vr.get_batch(indices)
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else batch.numpy()  # honours any global bridge
    return DecodedVideo(frames, indices, len(vr), fps, "decord")


class _PtsMismatch(Exception):
    """The fast path could not prove it got the wanted frame; the sequential path is used instead."""


# Containers whose packet timestamps follow decode order, not presentation order (AVI has no
# composition times): with B-frames the i-th smallest pts is not frame i there, so they are
# always decoded sequentially (MSVD's clips are AVI, and short).
DECODE_ORDER_FORMATS = frozenset({"avi"})
# Decoders that apply skip_frame packet by packet. dav1d (AV1), for one, reads it only when it
# opens, so a NONREF meant for one unwanted packet would drop frames for the rest of the decode.
SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vp8", "vp9"})


def _decode_pyav(path: Path, choose: Callable[[int, float], list[int]], deadline: float) -> DecodedVideo:
    """Decode only what the sampled frames need, and prove each frame is the wanted one.

    Fast path: seek to the keyframe before a wanted frame when it lies in a later GOP, decode on
    otherwise; packets of frames nobody wants are decoded with ``skip_frame=NONREF`` (for decoders
    that honour it per packet), so frames that nothing references (most B-frames) are not decoded
    at all. Every returned frame must carry exactly the wanted pts, presentation pts must rise, and
    a seek must not land past its target (MPEG-TS/PS seeks can overshoot by a GOP).
    Safe path, taken if any of that fails, and always for AVI (decode-order timestamps): one
    sequential decode without seeks or skipping, the i-th frame out being frame i. Both use slice
    threads only: parallelism comes from the DataLoader's workers (one video each), and frame
    threads would apply ``skip_frame`` late.
    """
    import av

    def check_time() -> None:
        if time.monotonic() > deadline:  # lets an abandoned (timed-out) decode thread stop
            raise VideoError("video_unreadable", "decoding took longer than its time limit; gave up")

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # Demux once (no decoding) to learn every frame's pts and the keyframes: frame i is the
        # i-th smallest pts, the same count decord reports.
        pts, keys = [], []
        for packet in container.demux(stream):
            check_time()
            if packet.pts is not None:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        pts.sort()
        keys.sort()
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        height, width, codec_name = stream.height, stream.width, stream.codec_context.name
        decode_order = bool(set(container.format.name.split(",")) & DECODE_ORDER_FORMATS)
    indices = choose(len(pts), fps)
    rows: dict[int, list[int]] = {}  # frame index -> rows of the output (duplicates share a decode)
    for row, i in enumerate(indices):
        rows.setdefault(i, []).append(row)
    frames = np.empty((len(indices), height, width, 3), np.uint8)  # no second copy
    try:
        if decode_order:  # pts cannot index frames here: straight to the safe path
            raise _PtsMismatch
        _pyav_seek_and_skip(path, pts, keys, rows, frames, codec_name in SKIP_NONREF_CODECS, check_time)
    except _PtsMismatch:
        _pyav_sequential(path, rows, frames, check_time)
    return DecodedVideo(frames, indices, len(pts), fps, "pyav")


def _pyav_seek_and_skip(path: Path, pts: list[int], keys: list[int], rows: dict[int, list[int]],
                        frames: np.ndarray, skip_nonref: bool, check_time: Callable[[], None]) -> None:
    import av

    wanted = {pts[i] for i in rows}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        codec = stream.codec_context

        def decode_from(key_pts: int):
            """Frames in presentation order from the keyframe at key_pts to the end of the stream."""
            container.seek(key_pts, stream=stream, backward=True, any_frame=False)
            for packet in container.demux(stream):
                check_time()
                keep = not skip_nonref or packet.pts is None or packet.pts in wanted
                codec.skip_frame = "DEFAULT" if keep else "NONREF"
                yield from codec.decode(packet)  # the final empty packet flushes the decoder

        decoder, last_pts = None, None
        for i in sorted(rows):
            target = pts[i]
            key = keys[max(0, bisect.bisect_right(keys, target) - 1)] if keys else pts[0]
            if decoder is None or last_pts is None or key > last_pts:
                # The wanted frame's GOP starts after the current position: jump instead of decoding on.
                decoder, last_pts = decode_from(key), None
            for frame in decoder:
                if frame.pts is None or (last_pts is not None and frame.pts <= last_pts):
                    raise _PtsMismatch  # presentation pts do not rise: they cannot index frames
                if last_pts is None and frame.pts > target:
                    raise _PtsMismatch  # the seek landed past the wanted frame
                last_pts = frame.pts
                if frame.pts >= target:
                    if frame.pts != target:
                        raise _PtsMismatch  # the wanted frame never came out
                    frames[rows[i]] = frame.to_ndarray(format="rgb24")
                    break
            else:
                raise _PtsMismatch  # the stream ended before the wanted frame


def _pyav_sequential(path: Path, rows: dict[int, list[int]], frames: np.ndarray,
                     check_time: Callable[[], None]) -> None:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        last = max(rows)
        for i, frame in enumerate(container.decode(stream)):
            check_time()
            if i in rows:
                frames[rows[i]] = frame.to_ndarray(format="rgb24")
            if i == last:
                return
    raise VideoError("video_unreadable", f"the stream ended before frame {last}")


def _decode_images(path: Path, choose: Callable[..., list[int]], deadline: float, fps: float = 0.0) -> DecodedVideo:
    return DecodedVideo(*read_frame_folder(path, choose, deadline, fps), "images")


def _decode_gif(path: Path, choose: Callable[..., list[int]], deadline: float) -> DecodedVideo:
    return DecodedVideo(*read_gif(path, choose, deadline), "gif")


_BACKENDS = {"decord": _decode_decord, "pyav": _decode_pyav, "gif": _decode_gif}


def _bounded(fn: Callable[[], DecodedVideo], timeout_s: float, path: Path) -> DecodedVideo:
    """Run `fn` in a daemon thread and give up after `timeout_s` (decord's get_batch cannot be interrupted)."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread below
            result["error"] = e

    worker = threading.Thread(target=target, name=f"decode {path.name}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise VideoError("video_unreadable", f"{path}: decoding took longer than {timeout_s:g}s; gave up")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def _as_video_error(path: Path, backend: str, e: Exception) -> VideoError:
    if isinstance(e, VideoError):
        return VideoError(e.status, f"{path}: {backend}: {e.message}")
    # decord raises DECORDError (an Exception, not a RuntimeError); PyAV raises av.error.* (OSError/ValueError).
    return VideoError("video_unreadable", f"{path}: {backend}: {type(e).__name__}: {e}".strip())


def decode_video(path: str | os.PathLike, num_frames: int, *, backend: str = "auto",
                 window: tuple[float, float] | None = None, method: str = "reference",
                 timeout_s: float = 120.0, image_fps: float = 0.0) -> DecodedVideo:
    """Decode the `num_frames` sampled frames of a video file, GIF or directory of frame images.

    backend "auto" uses decord when installed (the reference's decoder) and falls back to PyAV
    when decord fails on the file; the error then carries both messages. A ``.gif`` goes to
    Pillow first under "auto" (decord cannot read GIFs), PyAV second. `window` (seconds)
    restricts sampling to a clip of the video (STAR, MVBench). `image_fps` is the frame rate of a
    folder of frame images (0: unknown, and then a window cannot be placed in it).
    """
    path = Path(path)
    if not path.exists():
        raise VideoError("video_missing", f"{path}: no such file or directory")
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"unknown backend {backend!r}; expected 'auto', 'decord' or 'pyav'")
    deadline = time.monotonic() + timeout_s

    def choose(total: int, fps: float, times: list[float] | None = None) -> list[int]:
        return _window_indices(total, fps, num_frames, window, method, times)

    if path.is_dir():
        names = ["images"]
    elif backend == "auto" and path.suffix.lower() == ".gif":
        names = ["gif", "pyav"]
    elif backend == "auto":
        names = ["decord", "pyav"] if importlib.util.find_spec("decord") is not None else ["pyav"]
    else:
        names = [backend]
    errors: list[VideoError] = []
    for name in names:
        if name == "images":
            fn = lambda p, c, d: _decode_images(p, c, d, image_fps)  # noqa: E731
        else:
            fn = _BACKENDS[name]
        remaining = deadline - time.monotonic()
        try:
            return _bounded(lambda: fn(path, choose, deadline), max(remaining, 0.001), path)
        except VideoError as e:  # our own verdict (bad window, timeout): another decoder won't help
            raise _as_video_error(path, name, e) from None
        except Exception as e:
            errors.append(_as_video_error(path, name, e))
    raise VideoError("video_unreadable", " | ".join(e.message for e in errors))


def preprocess_frames(frames: np.ndarray, size: int = 336, mean: tuple[float, ...] = CLIP_MEAN,
                      std: tuple[float, ...] = CLIP_STD) -> torch.Tensor:
    """The reference's `resize` path: PIL bicubic squash to size x size, x/255, CLIP normalisation.

    Arithmetic follows the Hugging Face CLIP processor the reference calls: rescale in float64,
    cast to float32, then normalise with float32 mean/std. That arithmetic depends only on a
    pixel's uint8 value and channel, so it is done once per (channel, value) into a 3 x 256 table
    and the resized pixels are looked up, straight into ``[T,3,S,S]``: bitwise the element-wise
    result (tests/test_video.py), 3-6x faster than it for 100 frames at 336 px.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [T,H,W,3], got {frames.dtype} {frames.shape}")
    resized = np.stack([np.asarray(Image.fromarray(f).convert("RGB").resize((size, size), Image.BICUBIC))
                        for f in frames])                                        # uint8 [T,S,S,3]
    table = normalisation_table(mean, std)                                       # float32 [3, 256]
    out = np.empty((resized.shape[0], 3, size, size), dtype=np.float32)
    for c in range(3):
        out[:, c] = table[c][resized[..., c]]
    return torch.from_numpy(out)


def normalisation_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 ``[3, 256]``: ``(float32(v * (1/255) in float64) - mean[c]) / std[c]`` in float32,
    the CLIP processor's arithmetic for every uint8 value ``v`` of channel ``c``."""
    levels = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    return (levels[None, :] - np.asarray(mean, dtype=np.float32)[:, None]) / np.asarray(std, dtype=np.float32)[:, None]
