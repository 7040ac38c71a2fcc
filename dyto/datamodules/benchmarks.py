"""One DataModule per benchmark, registered under the PREPARERS names.

A subclass only fixes `benchmark`, which fixes how that benchmark's videos are named on disk
(paths.RESOLUTION) and guards against feeding it another benchmark's records.
"""

from __future__ import annotations

from dyto.datamodules.base import VideoQADataModule
from dyto.datamodules.preparers import PREPARERS


class MSVDQADataModule(VideoQADataModule):
    benchmark = "msvd_qa"


class MSRVTTQADataModule(VideoQADataModule):
    benchmark = "msrvtt_qa"


class TGIFQADataModule(VideoQADataModule):
    benchmark = "tgif_qa"


class ActivityNetQADataModule(VideoQADataModule):
    benchmark = "activitynet_qa"


class NExTQADataModule(VideoQADataModule):
    benchmark = "nextqa"


class EgoSchemaDataModule(VideoQADataModule):
    benchmark = "egoschema"


class IntentQADataModule(VideoQADataModule):
    benchmark = "intentqa"


class STARDataModule(VideoQADataModule):
    benchmark = "star"


class VideoMMEDataModule(VideoQADataModule):
    benchmark = "videomme"


class VCGBenchDataModule(VideoQADataModule):
    benchmark = "vcgbench"


DATAMODULES: dict[str, type[VideoQADataModule]] = {
    cls.benchmark: cls
    for cls in (MSVDQADataModule, MSRVTTQADataModule, TGIFQADataModule, ActivityNetQADataModule, NExTQADataModule,
                EgoSchemaDataModule, IntentQADataModule, STARDataModule, VideoMMEDataModule, VCGBenchDataModule)
}
if set(DATAMODULES) != set(PREPARERS):
    raise ImportError(f"DataModules and preparers disagree: {sorted(set(DATAMODULES) ^ set(PREPARERS))}")
