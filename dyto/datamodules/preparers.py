"""Building blocks shared by the benchmarks' QA-sheet preparers (spec datasets.md §2).

Each benchmark's own preparer lives in its module under ``dyto/datamodules/benchmarks/`` (what
used to be one function each in this file, with the ``PREPARERS`` table now being the registry).
Every preparer takes the sheet path (VCGBench: the folder of its four CSVs) and returns
``Prepared(records, errors)``. Ids are the ids the official scorers use; where the sheet's own id
differs, it is kept in ``meta["question_id"]``. Meta keys:

* ``question_type``: the sheet's raw type; ``type_name`` spells out TGIF/ActivityNet codes.
* ``category``: MSRVTT's video category (its ``question_type`` column), STAR's question category.
* ``report_type``: NExT-QA/IntentQA type for reporting, TP merged into TN as their papers do.
* ``fixed``: what was repaired in the row (ActivityNet's leaked index prefix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from dyto.datamodules.sheets import Prepared, RowError, cell, collect, read_csv
from dyto.records import QARecord

__all__ = ["OPEN_ENDED_COLUMNS", "Prepared", "RowError", "mc_options", "open_ended"]

# The IG-VLM open-ended layout (MSVD, MSRVTT, TGIF, ActivityNet).
OPEN_ENDED_COLUMNS = ("video_id", "answer", "question", "video_name", "question_id", "question_type")


def open_ended(benchmark: str, split: str, make: Callable[[dict[str, Any]], dict[str, Any]]):
    """A preparer for the IG-VLM open-ended layout; ``make`` gives the id, video and meta of a row
    (and may override the question)."""

    def prepare(qa_file: Path) -> Prepared:
        rows, errors = read_csv(qa_file, OPEN_ENDED_COLUMNS)

        def convert(row: dict[str, Any]) -> QARecord:
            fields = {"question": cell(row, "question"), "answer": cell(row, "answer"), **make(row)}
            return QARecord(benchmark=benchmark, task="open_ended", split=split, **fields)

        return collect(qa_file, rows, convert, errors)

    prepare.__name__ = prepare.__qualname__ = f"prepare_{benchmark}"
    return prepare


def mc_options(row: dict[str, Any], option_columns: int) -> list[str]:
    """The answer options of a multiple-choice row: cells ``a0`` .. ``a{n-1}``."""
    return [cell(row, f"a{i}") for i in range(option_columns)]
