"""VCGBench (Video-ChatGPT's text-generation benchmark, GPT-judged on five dimensions): the folder
holding IG-VLM's ``Generic_QA.csv``, ``Temporal_QA.csv`` and the row-aligned
``Consistency_QA1.csv`` / ``Consistency_QA2.csv``. Videos are ActivityNet's (``v_`` prefix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks.spec import BenchmarkSpec, VideoRule, paper_rows
from dyto.datamodules.sheets import Prepared, RowError, RowProblem, cell, collect, read_csv, sheet_in
from dyto.records import QARecord

VCG_COLUMNS = ("video_name", "question", "question_id", "answer")


def _vcg_record(kind: str, row: dict[str, Any], **extra: Any) -> QARecord:
    qid = cell(row, "question_id")
    # The same question_id appears in the generic, temporal and consistency sheets: prefix the kind.
    return QARecord(id=f"{kind}_{qid}", benchmark="vcgbench", task=f"vcg_{kind}", video=cell(row, "video_name"),
                    question=cell(row, "question"), answer=cell(row, "answer"), split="test",
                    meta={"question_id": qid}, **extra)


def prepare_vcgbench(qa_folder: Path) -> Prepared:
    """Generic_QA.csv, Temporal_QA.csv and the row-aligned Consistency_QA1/2.csv of one folder."""
    qa_folder = Path(qa_folder)
    out = Prepared()
    for kind, name in (("generic", "Generic_QA.csv"), ("temporal", "Temporal_QA.csv")):
        rows, errors = read_csv(sheet_in(qa_folder, name), VCG_COLUMNS)
        part = collect(sheet_in(qa_folder, name), rows, lambda row, kind=kind: _vcg_record(kind, row), errors)
        out.records += part.records
        out.errors += part.errors
    # The two consistency sheets are row-aligned paraphrases; pair them by question_id (unique in
    # each) so a broken row in one sheet cannot shift every later pair.
    first, first_errors = read_csv(sheet_in(qa_folder, "Consistency_QA1.csv"), VCG_COLUMNS)
    second, second_errors = read_csv(sheet_in(qa_folder, "Consistency_QA2.csv"), VCG_COLUMNS)
    second_by_qid = {row.get("question_id"): (line, row) for line, row in second}
    unpaired = dict(second_by_qid)

    def convert(row: dict[str, Any]) -> QARecord:
        qid = cell(row, "question_id")
        if qid not in second_by_qid:
            raise RowProblem(f"question_id {qid!r} has no row in Consistency_QA2.csv")
        line2, row2 = unpaired.pop(qid, second_by_qid[qid])
        if row2.get("answer") != row.get("answer"):
            raise RowProblem(f"Consistency_QA2.csv line {line2} has the same question_id but another answer")
        return _vcg_record("consistency", row, question2=cell(row2, "question"))

    part = collect(sheet_in(qa_folder, "Consistency_QA1.csv"), first, convert, first_errors + second_errors)
    part.errors += [RowError(str(sheet_in(qa_folder, "Consistency_QA2.csv")), line, "no row with this question_id in "
                             "Consistency_QA1.csv") for line, _ in unpaired.values()]
    out.records += part.records
    out.errors += part.errors
    return out


SPEC = BenchmarkSpec(
    name="vcgbench",
    tasks=("vcg_generic", "vcg_temporal", "vcg_consistency"),
    prepare=prepare_vcgbench,
    sheet="the folder of Generic_QA.csv, Temporal_QA.csv, Consistency_QA1.csv, Consistency_QA2.csv",
    videos=VideoRule(v_prefix=True),
    published=paper_rows("vcgbench", "vcgbench_average", {"7B": 3.16, "34B": 3.32}, "S2",
                         "per-dimension numbers not found"),
)
