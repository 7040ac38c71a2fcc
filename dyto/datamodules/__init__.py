"""The data side: benchmarks, QA-sheet preparation, video decoding, and the Lightning DataModule.

Modules: benchmarks/ (one spec per benchmark and the registry: ``BENCHMARKS``, ``get_benchmark``,
``register_benchmark``), sheets.py / preparers.py / prepare.py (raw sheet -> canonical JSONL,
``dyto prepare``), paths.py (where a record's video is), video.py (sampling, decoding),
preprocess.py (``Preprocessing``), base.py (``VideoQADataModule``, one class for every benchmark).
Names are imported lazily so that ``dyto prepare`` does not pay for importing Lightning.

The per-benchmark class names of earlier versions (``NExTQADataModule``, ...) still resolve, for
configs and run folders written by them: each is ``VideoQADataModule`` with that benchmark preset.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

_WHERE = {
    "VideoQADataModule": "base", "VideoQADataset": "base", "collate": "base",
    "BENCHMARKS": "benchmarks", "BenchmarkSpec": "benchmarks", "get_benchmark": "benchmarks",
    "register_benchmark": "benchmarks",
    "PrepareReport": "prepare", "prepare": "prepare", "RowError": "sheets", "Preprocessing": "preprocess",
    "VideoError": "paths", "VideoResolver": "paths", "resolve_video": "paths", "resolver_for": "paths",
    "DecodedVideo": "video", "decode_video": "video", "preprocess_frames": "video", "sample_frame_indices": "video",
}
# Frozen: the class names configs used before there was one DataModule. New benchmarks get none.
LEGACY_DATAMODULES = {
    "MSVDQADataModule": "msvd_qa", "MSRVTTQADataModule": "msrvtt_qa", "TGIFQADataModule": "tgif_qa",
    "ActivityNetQADataModule": "activitynet_qa", "NExTQADataModule": "nextqa", "EgoSchemaDataModule": "egoschema",
    "IntentQADataModule": "intentqa", "STARDataModule": "star", "VideoMMEDataModule": "videomme",
    "VCGBenchDataModule": "vcgbench",
}
__all__ = sorted(_WHERE)


@functools.cache
def _legacy_datamodule(name: str) -> type:
    """``VideoQADataModule`` with ``LEGACY_DATAMODULES[name]`` preset (the same class object on
    every call, so it pickles by name)."""
    base = importlib.import_module(f"{__name__}.base").VideoQADataModule
    return type(name, (base,), {"__module__": __name__, "__qualname__": name,
                                "benchmark": LEGACY_DATAMODULES[name],
                                "__doc__": f"Deprecated alias: VideoQADataModule(benchmark="
                                           f"{LEGACY_DATAMODULES[name]!r}, ...)."})


def __getattr__(name: str) -> Any:
    if name in LEGACY_DATAMODULES:
        return _legacy_datamodule(name)
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
