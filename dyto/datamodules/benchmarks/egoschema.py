"""EgoSchema (multiple choice, 5 options): IG-VLM's ``EgoSchema.csv``, the 500-question public
subset (answers are public only for these; the full 5,031 set is scored by the EgoSchema server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks.lmms_eval_tasks import EGOSCHEMA
from dyto.datamodules.benchmarks.spec import BenchmarkSpec, paper_rows
from dyto.datamodules.sheets import Prepared, answer_index, cell, collect, mc_options, read_csv
from dyto.records import QARecord

COLUMNS = ("video_name", "question_id", "question", "answer", "a0", "a1", "a2", "a3", "a4")


def prepare_egoschema(qa_file: Path) -> Prepared:
    rows, errors = read_csv(qa_file, COLUMNS)

    def convert(row: dict[str, Any]) -> QARecord:
        q_uid, options = cell(row, "video_name"), mc_options(row, 5)
        return QARecord(
            id=q_uid, benchmark="egoschema", task="multiple_choice", video=f"{q_uid}.mp4",
            question=cell(row, "question"), answer=cell(row, "answer"), options=options,
            answer_index=answer_index(options, cell(row, "answer")), split="subset",
            meta={"google_drive_id": cell(row, "question_id"),
                  "subset": "the 500-question public subset (answers are public only for these; "
                            "the full 5,031 set is scored by the EgoSchema server)"})

    return collect(qa_file, rows, convert, errors)


SPEC = BenchmarkSpec(
    name="egoschema",
    tasks=("multiple_choice",),
    prepare=prepare_egoschema,
    sheet="EgoSchema.csv (IG-VLM data/multiple_choice_qa)",
    published=paper_rows("egoschema", "accuracy", {"7B": 48.6, "34B": 56.8}, "S2", "500-question public subset"),
    lmms_eval=EGOSCHEMA,
)
