"""MSVD-QA (open-ended, GPT-judged): IG-VLM's ``MSVD_QA.csv``, videos ``<video_name>.avi``."""

from __future__ import annotations

from typing import Any

from dyto.datamodules.benchmarks.spec import BenchmarkSpec, paper_rows
from dyto.datamodules.sheets import cell, integer, open_ended


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": cell(row, "question_id"), "video": cell(row, "video_name"),
            "meta": {"video_id": cell(row, "video_id"), "question_type": integer(row, "question_type")}}


JUDGE = "judge GPT-3.5-Turbo-0125"
SPEC = BenchmarkSpec(
    name="msvd_qa",
    tasks=("open_ended",),
    prepare=open_ended("msvd_qa", "val", _row),
    sheet="MSVD_QA.csv (IG-VLM data/open_ended_qa)",
    published=(*paper_rows("msvd_qa", "accuracy", {"7B": 77.6, "34B": 79.6}, "S2", JUDGE),
               *paper_rows("msvd_qa", "score", {"7B": 3.9, "34B": 4.1}, "S2", JUDGE)),
)
