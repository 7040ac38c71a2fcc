"""STAR (multiple choice, 4 options): IG-VLM's ``STAR.csv``.

A question is about a window of a Charades video: ``video_name`` is ``<CharadesID>_<start>_<end>``
with Python-printed floats (``38.425000000000004`` included), parsed rather than rebuilt, and the
frames are sampled inside that window. Accuracy is broken down by question category.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks.spec import BenchmarkSpec, paper_rows
from dyto.datamodules.sheets import (Prepared, RowProblem, answer_index, cell, collect, integer, mc_options,
                                     read_csv)
from dyto.records import QARecord

COLUMNS = ("video_name", "question", "answer_number", "question_id", "question_type", "a0", "a1", "a2", "a3",
           "answer")


def star_category(qtype: str) -> str:
    """STAR question category: ``Interaction_T1`` -> ``Interaction``."""
    return qtype.split("_")[0]


def prepare_star(qa_file: Path) -> Prepared:
    rows, errors = read_csv(qa_file, COLUMNS)

    def convert(row: dict[str, Any]) -> QARecord:
        clip = cell(row, "video_name")
        parts = clip.rsplit("_", 2)
        try:
            charades, start, end = parts[0], float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise RowProblem(f"video_name {clip!r} is not <CharadesID>_<start>_<end>") from None
        if not charades or not 0 <= start < end:
            raise RowProblem(f"video_name {clip!r} has no id or an empty time window")
        options, qtype = mc_options(row, 4), cell(row, "question_type")
        return QARecord(
            id=cell(row, "question_id"), benchmark="star", task="multiple_choice", video=f"{charades}.mp4",
            question=cell(row, "question"), answer=cell(row, "answer"), options=options,
            answer_index=answer_index(options, cell(row, "answer"), integer(row, "answer_number")),
            start=start, end=end, split="val",
            meta={"clip": clip, "question_type": qtype, "category": star_category(qtype)})

    return collect(qa_file, rows, convert, errors)


SPEC = BenchmarkSpec(
    name="star",
    tasks=("multiple_choice",),
    prepare=prepare_star,
    sheet="STAR.csv (IG-VLM data/multiple_choice_qa)",
    windows=True,
    type_field="category",
    derive_type=star_category,
    published=paper_rows("star", "accuracy", {"?": 51.1}, "S4", "model size not stated (probably 34B, arXiv v1)"),
)
