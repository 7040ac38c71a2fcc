"""Where a QA record's video lives: one resolution routine shared by `dyto prepare`'s coverage
report and the DataModules, so a video counted as found before a run is the one decoded in it.

The reference runners differ per benchmark (docs/datasets.md §1, item 3): open-ended runners probe
`.mp4 .avi .mov .mkv` and add `v_` for ActivityNet, multiple-choice runners join the stored name,
and NExT-QA's raw release is nested `<folder>/<video>.mp4`. We accept a superset of those layouts
so that a video on disk is found, and a miss says everything that was tried. Which rule a
benchmark uses is its spec's ``videos`` field (``dyto.datamodules.benchmarks``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks import BENCHMARKS, VideoRule, find_benchmark
from dyto.records import QARecord

# Probe order: the reference's four first, then the formats the releases actually ship in
# (ActivityNet .webm, TGIF .gif, VideoMME's occasional upper-case .MP4).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".MP4")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# NExT-QA's official file mapping a video id to its `<folder>/<video>` path.
NEXTQA_MAP_NAME = "map_vid_vidorID.json"


class VideoError(Exception):
    """A video that cannot be used; `status` is the prediction status it turns into."""

    def __init__(self, status: str, message: str) -> None:
        if status not in ("video_missing", "video_unreadable"):
            raise ValueError(f"VideoError status must be video_missing or video_unreadable, not {status!r}")
        super().__init__(message)
        self.status = status
        self.message = message


# The per-benchmark rule is the spec's ``videos`` field; ``Resolution`` is its old name here.
Resolution = VideoRule


def _split_ext(name: str) -> str:
    """The name without a known video extension (names like `bQJQGoJF7_k_162_169` have none)."""
    for ext in VIDEO_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def is_frame_dir(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


class VideoResolver:
    """Callable record -> existing Path, raising VideoError('video_missing') with the tried paths."""

    def __init__(self, video_root: str | os.PathLike | None, resolution: VideoRule = VideoRule(),
                 video_map: str | os.PathLike | None = None) -> None:
        self.root = Path(video_root) if video_root is not None else Path(".")
        self.resolution = resolution
        self.nested: dict[str, str] = {}
        if resolution.nested or video_map is not None:
            self.nested = self._load_nested(video_map)

    def _load_nested(self, video_map: str | os.PathLike | None) -> dict[str, str]:
        """video stem -> path relative to the root, without extension."""
        map_path = Path(video_map) if video_map is not None else self.root / NEXTQA_MAP_NAME
        if map_path.is_file():
            with map_path.open(encoding="utf-8") as f:
                return {str(k): str(v) for k, v in json.load(f).items()}
        if video_map is not None:
            raise FileNotFoundError(f"video map {map_path} does not exist")
        # No map: index the tree once (one walk, not one per record).
        index: dict[str, str] = {}
        for dirpath, _, files in os.walk(self.root):
            for name in sorted(files):
                stem, ext = os.path.splitext(name)
                if ext in VIDEO_EXTENSIONS:
                    rel = os.path.relpath(os.path.join(dirpath, stem), self.root)
                    index.setdefault(stem, rel)
        return index

    def candidates(self, record: QARecord) -> list[Path]:
        """Every path tried, in order: the stored name, then each spelling x extension."""
        stem = _split_ext(record.video)
        parent, base = os.path.split(stem)
        bases = [base]
        if self.resolution.v_prefix:
            bases.append(base[2:] if base.startswith("v_") else "v_" + base)
        stems = [os.path.join(parent, b) for b in bases]
        if base in self.nested:
            stems.append(self.nested[base])
        out = [self.root / record.video]
        for s in stems:
            out.extend(self.root / (s + ext) for ext in VIDEO_EXTENSIONS)
            out.append(self.root / s)  # a directory of frame images
        return list(dict.fromkeys(out))

    def __call__(self, record: QARecord) -> Path:
        tried = self.candidates(record)
        for path in tried:
            if path.is_file() or is_frame_dir(path):
                return path
        raise VideoError("video_missing", f"no video for {record.video!r} under {self.root} "
                         f"(tried {len(tried)} paths, e.g. {tried[0]}, {tried[1]})")


def resolver_for(benchmark: str | None, video_root: str | os.PathLike | None,
                 video_map: str | os.PathLike | None = None) -> VideoResolver:
    """A resolver with the registered benchmark's rule (the plain rule for an unregistered name)."""
    spec = find_benchmark(benchmark)
    return VideoResolver(video_root, spec.videos if spec is not None else VideoRule(), video_map)


def resolve_video(video_root: str | os.PathLike | None, record: QARecord,
                  video_map: str | os.PathLike | None = None) -> Path:
    """Resolve one record with its benchmark's rules (builds a resolver; reuse `resolver_for` in loops)."""
    return resolver_for(record.benchmark, video_root, video_map)(record)


def __getattr__(name: str) -> Any:
    if name == "RESOLUTION":  # the old table, now read off the registry: benchmark -> its non-default rule
        return {b: spec.videos for b, spec in BENCHMARKS.items() if spec.videos != VideoRule()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
