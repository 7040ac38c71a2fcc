"""The old ``PREPARERS`` table, kept for code that imports it: now a read-only view of the
benchmark registry (benchmark name -> its spec's ``prepare``).

Each benchmark's preparer lives in its own module under ``dyto/datamodules/benchmarks/``, and the
pieces several of them share (``open_ended``, ``mc_options``) in ``sheets.py``. Every preparer
takes the sheet path (VCGBench: the folder of its four CSVs) and returns
``Prepared(records, errors)``. Ids are the ids the official scorers use; where the sheet's own id
differs, it is kept in ``meta["question_id"]``. Meta keys:

* ``question_type``: the sheet's raw type; ``type_name`` spells out TGIF/ActivityNet codes.
* ``category``: MSRVTT's video category (its ``question_type`` column), STAR's question category.
* ``report_type``: NExT-QA/IntentQA type for reporting, TP merged into TN as their papers do.
* ``fixed``: what was repaired in the row (ActivityNet's leaked index prefix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Mapping

from dyto.datamodules.benchmarks import BENCHMARKS
from dyto.datamodules.benchmarks.nextqa import report_type
from dyto.datamodules.benchmarks.star import star_category
from dyto.datamodules.sheets import Prepared, RowError

__all__ = ["PREPARERS", "Prepared", "RowError", "report_type", "star_category"]


class _Preparers(Mapping):
    """name -> preparer, live: a benchmark registered later is in it too."""

    def __getitem__(self, name: str) -> Callable[[Path], Prepared]:
        return BENCHMARKS[name].prepare

    def __iter__(self) -> Iterator[str]:
        return iter(BENCHMARKS)

    def __len__(self) -> int:
        return len(BENCHMARKS)


PREPARERS: Mapping[str, Callable[[Path], Prepared]] = _Preparers()
