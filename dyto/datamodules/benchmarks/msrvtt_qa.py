"""MSRVTT-QA (open-ended, GPT-judged): IG-VLM's ``MSRVTT_QA.csv``; its ``question_type`` column is
the video's category, kept as ``meta["category"]``."""

from __future__ import annotations

from typing import Any

from dyto.datamodules.benchmarks.spec import BenchmarkSpec, paper_rows
from dyto.datamodules.sheets import cell, integer, open_ended


def _row(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": cell(row, "question_id"), "video": cell(row, "video_name"),
            "meta": {"video_id": cell(row, "video_id"), "category": integer(row, "question_type")}}


JUDGE = "judge GPT-3.5-Turbo-0125"
SPEC = BenchmarkSpec(
    name="msrvtt_qa",
    tasks=("open_ended",),
    prepare=open_ended("msrvtt_qa", "val", _row),
    sheet="MSRVTT_QA.csv (IG-VLM data/open_ended_qa)",
    published=(*paper_rows("msrvtt_qa", "accuracy", {"7B": 64.1, "34B": 66.2}, "S2", JUDGE),
               *paper_rows("msrvtt_qa", "score", {"7B": 3.4, "34B": 3.6}, "S2", JUDGE)),
)
