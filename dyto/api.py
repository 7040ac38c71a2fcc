"""A small Python API for notebooks and scripts: no CLI, plain Python objects.

    from dyto import api
    clip = api.load_clip("dyto/assets/demo/bigbuckbunny.mp4", num_frames=100)
    feats = api.standin_features(clip)                 # [T, 576, 256], no CLIP weights needed
    red = api.reduce(feats, "dyto")                    # Reduction: tokens, frames_kept, info
    module = api.load_model("tiny", reducer=api.build_reducer("dyto", budget=96))
    rec = api.ask(module, clip.path, "what animal is this?")   # a prediction record (dict)
    run = api.load_run("outputs/demo")                 # predictions, results, summary
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import Tensor

from dyto.datamodules.base import VideoQADataset, collate
from dyto.datamodules.video import CLIP_MEAN, CLIP_STD, decode_video, preprocess_frames
from dyto.models.backbone import build_backbone
from dyto.models.llava_next import DyToVideoQA
from dyto.models.videoqa import VideoQA
from dyto.records import QARecord
from dyto.reduction import Reduction, TokenReducer, build_reducer
from dyto.reduction.features import pixel_patch_features
from dyto.runs import Run, RunFolder

__all__ = ["Clip", "Run", "ask", "build_reducer", "load_clip", "load_model", "load_run", "question_batch", "reduce",
           "standin_features"]


@dataclass
class Clip:
    path: str
    frames: np.ndarray   # uint8 [T, H, W, 3], the sampled frames as decoded
    indices: list[int]   # video frame number of each sampled frame
    total_frames: int
    pixels: Tensor       # [T, 3, S, S], the reference's squash-resize + CLIP normalisation


def load_clip(path: str | Path, num_frames: int = 100, size: int = 336, **decode_kwargs: Any) -> Clip:
    """Decode `num_frames` frames the way the benchmarks do (reference sampling) and preprocess them."""
    video = decode_video(path, num_frames, **decode_kwargs)
    return Clip(str(path), video.frames, video.indices, video.total_frames,
                preprocess_frames(video.frames, size, CLIP_MEAN, CLIP_STD))


def standin_features(clip: Clip, grid: int = 24, dim: int = 256) -> Tensor:
    """Deterministic stand-in for CLIP + projector features: [T, grid*grid, dim] pooled pixel patches."""
    return pixel_patch_features(clip.pixels, grid=grid, dim=dim)


def reduce(features: Tensor, reducer: str | TokenReducer = "dyto", **params: Any) -> Reduction:
    """Run a registered reducer (by name, with params) or a reducer object on [T, N, D] features."""
    red = build_reducer(reducer, **params) if isinstance(reducer, str) else reducer
    side = int(round(features.shape[1] ** 0.5))
    return red(features, (side, side))


def load_model(model: str = "tiny", reducer: TokenReducer | None = None, backbone: str = "llava_next", **kwargs: Any):
    """The video-QA LightningModule in eval mode.

    `backbone` is a registered family (llava_next, llava_onevision, internvl, ...) and `model` its
    checkpoint ('tiny' = that family's random-weight model, built in memory). Keyword arguments
    go to :class:`~dyto.models.videoqa.VideoQA` where it takes them and to the backbone otherwise;
    for llava_next this is ``DyToVideoQA(model=..., **kwargs)`` as before.
    """
    if reducer is not None:
        kwargs["reducer"] = reducer
    if backbone == "llava_next":
        return DyToVideoQA(model=model, **kwargs).eval()
    own = set(inspect.signature(VideoQA.__init__).parameters) - {"self", "backbone"}
    module_kwargs = {k: v for k, v in kwargs.items() if k in own}
    backbone_kwargs = {k: v for k, v in kwargs.items() if k not in own}
    if "seed" in module_kwargs:
        backbone_kwargs.setdefault("seed", module_kwargs["seed"])
    return VideoQA(build_backbone(backbone, checkpoint=model, **backbone_kwargs), **module_kwargs).eval()


def question_batch(module, record: QARecord) -> dict[str, list[Any]]:
    """`record` as a batch of one for `module`: the benchmark runs' own decode + preprocess step
    (timed into ``decode_ms``), with the video path taken as given."""
    preprocessing = getattr(module, "preprocessing", None) or module.image_size   # old modules: a size only
    dataset = VideoQADataset([record], lambda rec: Path(rec.video), module.num_frames, preprocessing,
                             module.image_mean, module.image_std,
                             sampling=getattr(module, "sampling", None) or "reference")
    return collate([dataset[0]])


def ask(module, video: str | Path, question: str, options: Sequence[str] | None = None,
        question2: str | None = None) -> dict[str, Any]:
    """One question about one video through `module`; returns the prediction record.

    With `options` it is a multiple-choice question; with `question2` a VCGBench consistency pair.
    A video that cannot be read gives a record with its status, as in a benchmark run.
    """
    if options and question2:
        raise ValueError("a question has either options (multiple choice) or question2 (consistency), not both")
    task = "multiple_choice" if options else ("vcg_consistency" if question2 else "open_ended")
    record = QARecord(id="ask", benchmark="adhoc", task=task, video=str(video), question=question, answer="",
                      options=list(options) if options else None, question2=question2, split="test")
    sample = question_batch(module, record)
    out = module.predict_step(sample, 0)[0]
    # frames_kept counts the backbone's temporal patches (frames_per_patch sampled frames each)
    per_patch, indices = module.preprocessing.frames_per_patch, sample["frame_indices"][0]
    out["video_frames_kept"] = [indices[j] for i in (out["frames_kept"] or [])
                                for j in range(i * per_patch, min((i + 1) * per_patch, len(indices)))]
    return out


def load_run(run_dir: str | Path) -> Run:
    """A finished (or partial) run: merged predictions, results.json, summary.json and the settings
    fingerprint, when present."""
    return RunFolder(run_dir).load()
