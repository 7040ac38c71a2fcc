"""NExT-QA (multiple choice, 5 options): IG-VLM's ``NExT_QA.csv``.

Ids are ``<video>_<qid>`` (the official scorer's key; the sheet glues them together in
``question_id``). Videos are nested ``<folder>/<video>.mp4`` in the raw release. Accuracy is
broken down by question type (TP merged into TN, as the NExT-QA paper does) and by group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks.lmms_eval_tasks import NEXTQA
from dyto.datamodules.benchmarks.spec import BenchmarkSpec, VideoRule, paper_rows
from dyto.datamodules.sheets import (Prepared, RowProblem, answer_index, cell, collect, integer, mc_options,
                                     read_csv)
from dyto.records import QARecord

# NExT-QA question types (IntentQA uses the same codes) -> the paper's three groups.
NEXT_GROUPS = {"CW": "causal", "CH": "causal", "TN": "temporal", "TC": "temporal",
               "DC": "descriptive", "DL": "descriptive", "DO": "descriptive"}
COLUMNS = ("video_name", "frame_count", "width", "height", "question", "answer_number", "question_id",
           "question_type", "a0", "a1", "a2", "a3", "a4", "answer")


def report_type(qtype: str) -> str:
    """NExT-QA/IntentQA reporting type: TP merged into TN, as their papers do."""
    return "TN" if qtype == "TP" else qtype


def prepare_nextqa(qa_file: Path) -> Prepared:
    rows, errors = read_csv(qa_file, COLUMNS)

    def convert(row: dict[str, Any]) -> QARecord:
        video, joined = cell(row, "video_name"), cell(row, "question_id")
        qid = joined[len(video):]
        if not joined.startswith(video) or not qid.isdigit():
            raise RowProblem(f"question_id {joined!r} is not video {video!r} followed by a numeric qid")
        options, qtype = mc_options(row, 5), cell(row, "question_type")
        return QARecord(
            id=f"{video}_{qid}", benchmark="nextqa", task="multiple_choice", video=f"{video}.mp4",
            question=cell(row, "question"), answer=cell(row, "answer"), options=options,
            answer_index=answer_index(options, cell(row, "answer"), integer(row, "answer_number")), split="val",
            meta={"question_id": joined, "qid": qid, "question_type": qtype, "report_type": report_type(qtype),
                  "frame_count": integer(row, "frame_count"), "width": integer(row, "width"),
                  "height": integer(row, "height")})

    return collect(qa_file, rows, convert, errors)


SPEC = BenchmarkSpec(
    name="nextqa",
    tasks=("multiple_choice",),
    prepare=prepare_nextqa,
    sheet="NExT_QA.csv (IG-VLM data/multiple_choice_qa)",
    videos=VideoRule(nested=True),
    type_field="report_type",
    derive_type=report_type,
    type_groups=NEXT_GROUPS,
    published=paper_rows("nextqa", "accuracy", {"7B": 65.7, "34B": 72.9}, "S2"),
    lmms_eval=NEXTQA,
)
