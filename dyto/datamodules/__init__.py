"""The data side: QA-sheet preparation, video decoding, and the Lightning DataModules.

Modules: sheets.py / preparers.py / prepare.py (raw sheet -> canonical JSONL, `dyto prepare`),
paths.py (where a record's video is), video.py (sampling, decoding, preprocessing), base.py
(VideoQADataModule), benchmarks.py (one registered subclass per benchmark, `DATAMODULES`).
Names are imported lazily so that `dyto prepare` does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "DATAMODULES": "benchmarks", "VideoQADataModule": "base", "VideoQADataset": "base", "collate": "base",
    "PREPARERS": "preparers", "PrepareReport": "prepare", "prepare": "prepare", "RowError": "sheets",
    "VideoError": "paths", "VideoResolver": "paths", "resolve_video": "paths", "resolver_for": "paths",
    "DecodedVideo": "video", "decode_video": "video", "preprocess_frames": "video", "sample_frame_indices": "video",
    # the per-benchmark DataModules, as named in configs/benchmarks/*.yaml
    **dict.fromkeys(("MSVDQADataModule", "MSRVTTQADataModule", "TGIFQADataModule", "ActivityNetQADataModule",
                     "NExTQADataModule", "EgoSchemaDataModule", "IntentQADataModule", "STARDataModule",
                     "VideoMMEDataModule", "VCGBenchDataModule"), "benchmarks"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
