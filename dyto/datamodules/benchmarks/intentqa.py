"""IntentQA (multiple choice, 5 options): IG-VLM's ``IntentQA.csv``; NExT-QA's type codes and groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks.nextqa import NEXT_GROUPS, report_type
from dyto.datamodules.benchmarks.spec import BenchmarkSpec, paper_rows
from dyto.datamodules.sheets import Prepared, answer_index, cell, collect, mc_options, read_csv
from dyto.records import QARecord

COLUMNS = ("video_name", "question", "question_id", "answer", "video_id", "question_type",
           "a0", "a1", "a2", "a3", "a4")


def prepare_intentqa(qa_file: Path) -> Prepared:
    rows, errors = read_csv(qa_file, COLUMNS)

    def convert(row: dict[str, Any]) -> QARecord:
        options, qtype = mc_options(row, 5), cell(row, "question_type")
        return QARecord(
            id=cell(row, "question_id"), benchmark="intentqa", task="multiple_choice",
            video=f"{cell(row, 'video_name')}.mp4", question=cell(row, "question"), answer=cell(row, "answer"),
            options=options, answer_index=answer_index(options, cell(row, "answer")), split="val",
            meta={"question_type": qtype, "report_type": report_type(qtype)})

    return collect(qa_file, rows, convert, errors)


SPEC = BenchmarkSpec(
    name="intentqa",
    tasks=("multiple_choice",),
    prepare=prepare_intentqa,
    sheet="IntentQA.csv (IG-VLM data/multiple_choice_qa)",
    type_field="report_type",
    derive_type=report_type,
    type_groups=NEXT_GROUPS,
    published=paper_rows("intentqa", "accuracy", {"7B": 61.6, "34B": 67.5}, "S2",
                         "34B: 67.3 in the ablation table, 66.4 on S4"),
)
