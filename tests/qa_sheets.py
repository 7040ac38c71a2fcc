"""The published QA sheets shipped in ``tests/fixtures``: which file is whose, and unpacking the full
ones (gzipped) with their sha256 checked against ``fixtures/qa/SOURCES.md``. Used by
tests/test_prepare.py and benchmarks/bench_padding.py."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
QA, QA_FULL = FIXTURES / "qa", FIXTURES / "qa-full"  # samples as shipped; full sheets gzipped

# the synthetic benchmark's sheet is generated (dyto synthetic); the package ships the demo's
SYNTHETIC_SAMPLE = Path(__file__).resolve().parents[1] / "dyto" / "assets" / "synthetic_demo" / "questions.jsonl"

SHEETS = {"msvd_qa": "MSVD_QA.csv", "msrvtt_qa": "MSRVTT_QA.csv", "tgif_qa": "TGIF_FrameQA.csv",
          "activitynet_qa": "ActivityNet_QA.csv", "nextqa": "NExT_QA.csv", "egoschema": "EgoSchema.csv",
          "intentqa": "IntentQA.csv", "star": "STAR.csv", "vcgbench": "VCGBench"}
# Samples written for the tests in a dataset's published format (invented rows: the real annotations
# are not shipped, see qa/SOURCES.md), with no full sheet behind them.
FORMAT_SAMPLES = {"mvbench": "MVBench", "mlvu": "MLVU", "longvideobench": "LongVideoBench/lvb_val.json"}


def unpack_full_sheet(name: str, dest: Path) -> Path:
    """Gunzip the full sheet (a CSV, or VCGBench's folder of four) into ``dest``; each unpacked file
    must have the sha256 that qa/SOURCES.md gives for the original."""
    sources = (QA / "SOURCES.md").read_text()
    packed = sorted((QA_FULL / name).glob("*.csv.gz")) if (QA_FULL / name).is_dir() else [QA_FULL / f"{name}.gz"]
    if not packed:
        raise FileNotFoundError(f"{QA_FULL}: no packed sheet for {name}")
    for gz in packed:
        out = dest / gz.relative_to(QA_FULL).with_suffix("")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(gzip.decompress(gz.read_bytes()))
        if hashlib.sha256(out.read_bytes()).hexdigest() not in sources:
            raise ValueError(f"{gz}: unpacked, it is not the published sheet (sha256 not in {QA / 'SOURCES.md'})")
    return dest / name
