"""The synthetic video-QA benchmark (open-ended + multiple choice), generated, not downloaded.

``dyto synthetic --out data/synthetic`` writes the clips and their sheet
(``dyto.datamodules.synthetic``) and prepares it; ``dyto prepare synthetic --qa-file
data/synthetic/test/questions.jsonl`` reads a sheet again. Ids are ``synthetic_<qid>``;
multiple-choice accuracy is broken down by scene kind (flash, order, count, direction, cut). The
events of each clip travel in ``meta["scene"]``, so an answer can be traced to its frames. There
are no published numbers: it is this repository's testbed for the tiny trained model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dyto.datamodules.benchmarks.spec import BenchmarkSpec
from dyto.datamodules.sheets import Prepared, RowProblem, answer_index, cell, collect, read_json_rows
from dyto.datamodules.synthetic import FORMS, KINDS
from dyto.records import QARecord



def prepare_synthetic(qa_file: Path) -> Prepared:
    rows = read_json_rows(qa_file)

    def convert(row: dict[str, Any]) -> QARecord:
        if not isinstance(row, dict):
            raise RowProblem(f"expected a JSON object, got {type(row).__name__}")
        kind, form = cell(row, "kind"), cell(row, "form")
        if kind not in KINDS:
            raise RowProblem(f"'kind' is {kind!r}; expected one of {KINDS}")
        if form not in FORMS:
            raise RowProblem(f"'form' is {form!r}; expected one of {FORMS}")
        options = row.get("options")
        if form == "multiple_choice" and (not isinstance(options, list) or len(options) < 2):
            raise RowProblem(f"a multiple-choice row needs a list of at least 2 'options', got {options!r}")
        if form == "open_ended" and options is not None:
            raise RowProblem("an open-ended row has 'options': null")
        split = row.get("split", "test")
        answer = cell(row, "answer")
        return QARecord(
            id=f"synthetic_{cell(row, 'qid')}", benchmark="synthetic", task=form, video=cell(row, "video"),
            question=cell(row, "question"), answer=answer,
            options=[str(o) for o in options] if options else None,
            answer_index=answer_index([str(o) for o in options], answer) if options else None,
            split="test" if split == "test" else "subset",  # records have no "train" split
            meta={"kind": kind, "form": form, "generator_split": split, "scene": row.get("scene")})

    return collect(qa_file, rows, convert)


SPEC = BenchmarkSpec(
    name="synthetic",
    tasks=FORMS,
    prepare=prepare_synthetic,
    sheet="questions.jsonl written by `dyto synthetic` (dyto.datamodules.synthetic)",
    type_field="kind",
)
