"""TGIF-QA FrameQA (open-ended, GPT-judged): IG-VLM's ``TGIF_FrameQA.csv``, GIFs ``<video_name>.gif``.

The sheet's ``question_id`` is per GIF (shared by up to 10 questions); its ``video_id``
(``FRAMEQA...``) is per question, so that is the record id.
"""

from __future__ import annotations

from typing import Any

from dyto.datamodules.benchmarks.spec import BenchmarkSpec, paper_rows
from dyto.datamodules.sheets import cell, integer, open_ended

TGIF_TYPES = {0: "object", 1: "number", 2: "color", 3: "location"}


def _row(row: dict[str, Any]) -> dict[str, Any]:
    qtype = integer(row, "question_type")
    return {"id": cell(row, "video_id"), "video": cell(row, "video_name"),
            "meta": {"question_id": cell(row, "question_id"), "question_type": qtype,
                     "type_name": TGIF_TYPES.get(qtype, "unknown")}}


JUDGE = "judge GPT-3.5-Turbo-0125"
SPEC = BenchmarkSpec(
    name="tgif_qa",
    tasks=("open_ended",),
    prepare=open_ended("tgif_qa", "test", _row),
    sheet="TGIF_FrameQA.csv (IG-VLM data/open_ended_qa)",
    published=(*paper_rows("tgif_qa", "accuracy", {"7B": 78.0, "34B": 80.7}, "S2", JUDGE),
               *paper_rows("tgif_qa", "score", {"7B": 4.0, "34B": 4.2}, "S2", JUDGE)),
)
