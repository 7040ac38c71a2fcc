"""Reading raw QA sheets row by row, with every bad row reported instead of crashing or vanishing.

The IG-VLM CSVs mix CRLF and LF, one has no final newline and ActivityNet's has quoted cells with
embedded newlines (docs/datasets.md §5, item 9), so they are read with the `csv` module on a file opened
with newline='' — never line by line. A row that cannot become a record turns into a `RowError`
(file, line, message) and is counted in the report.

Also the pieces several benchmarks' preparers share: ``open_ended`` (a whole preparer for the
IG-VLM open-ended layout) and ``mc_options`` (the ``a0``.. option cells).

Every sheet may also be gzipped (``NExT_QA.csv.gz``; a VCGBench folder of ``*.csv.gz``): it is
recognised by its first bytes and read as the file it holds.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dyto.errors import RecordsError
from dyto.records import QARecord


@dataclass(frozen=True)
class RowError:
    """A skipped row. `line` is the physical line where the CSV record starts (record number for JSON)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class RowProblem(ValueError):
    """Raised by a row converter; the driver turns it into a RowError for that row."""


@dataclass
class Prepared:
    records: list[QARecord] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


Row = tuple[int, dict[str, Any]]


def open_sheet(path: str | os.PathLike, encoding: str = "utf-8", newline: str | None = None):
    """A sheet opened as text; a gzipped one (found by its magic bytes, whatever its name) unpacked."""
    path = Path(path)
    with path.open("rb") as f:
        packed = f.read(2) == b"\x1f\x8b"
    if packed:
        return gzip.open(path, "rt", encoding=encoding, newline=newline)
    return path.open("r", encoding=encoding, newline=newline)


def sheet_kind(path: str | os.PathLike) -> str:
    """The sheet's format from its name, ``.gz`` left aside: ``.csv``, ``.json``, ``.jsonl``, ..."""
    path = Path(path)
    return (path.with_suffix("") if path.suffix == ".gz" else path).suffix


def sheet_in(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name``, or ``folder/name.gz`` when only the gzipped one is there."""
    plain = Path(folder) / name
    packed = plain.with_name(name + ".gz")
    return packed if not plain.exists() and packed.exists() else plain


def read_csv(path: str | os.PathLike, required: Iterable[str]) -> tuple[list[Row], list[RowError]]:
    """(line, {column: cell}) per record, plus errors for records whose cell count is wrong.

    A missing required column is a wrong file, not a bad row: it raises ValueError at once.
    """
    path = Path(path)
    rows: list[Row] = []
    errors: list[RowError] = []
    with open_sheet(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a CSV header")
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; header is {header}")
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells:  # a blank line is not a record
                continue
            if len(cells) != len(header):
                errors.append(RowError(str(path), line, f"expected {len(header)} cells, found {len(cells)}"))
                continue
            rows.append((line, dict(zip(header, cells))))
    return rows, errors


def read_json_rows(path: str | os.PathLike) -> list[Row]:
    """Rows of a JSON list, a JSONL file, or a parquet file (VideoMME's official format)."""
    path, kind = Path(path), sheet_kind(path)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a broken file
            raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        return list(enumerate(table.to_pylist(), start=1))
    with open_sheet(path) as f:
        try:
            if kind == ".jsonl":
                rows = []
                for n, line in enumerate(f, start=1):
                    if line.strip():
                        rows.append((n, json.loads(line)))
                return rows
            data = json.load(f)
        except json.JSONDecodeError as e:
            where = f"{path}:{n}" if kind == ".jsonl" else f"{path}:{e.lineno}"
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return list(enumerate(data, start=1))


def collect(path: str | os.PathLike, rows: list[Row], convert: Callable[[dict[str, Any]], QARecord],
            errors: list[RowError] | None = None) -> Prepared:
    """Convert rows to records; bad rows and duplicate ids become RowErrors, never silent drops."""
    out = Prepared(errors=list(errors or []))
    first_line: dict[str, int] = {}
    for line, row in rows:
        try:
            rec = convert(row)
        except RowProblem as e:
            out.errors.append(RowError(str(path), line, str(e)))
            continue
        if rec.id in first_line:
            out.errors.append(RowError(str(path), line, f"duplicate id {rec.id!r} (first on line {first_line[rec.id]})"))
            continue
        first_line[rec.id] = line
        out.records.append(rec)
    out.errors.sort(key=lambda e: (e.file, e.line))
    return out


def cell(row: dict[str, Any], name: str) -> str:
    """A required, non-blank text cell."""
    value = row.get(name)
    if value is None or not str(value).strip():
        raise RowProblem(f"empty {name!r}")
    return str(value)


def integer(row: dict[str, Any], name: str) -> int:
    value = cell(row, name)
    try:
        return int(value)
    except ValueError:
        raise RowProblem(f"{name!r} is not an integer: {value!r}") from None


def answer_index(options: list[str], answer: str, number: int | None = None) -> int:
    """Index of the correct option: `number` checked against the answer text, or found from the text."""
    if answer not in options:
        raise RowProblem(f"answer {answer!r} is not among the options {options}")
    if number is None:
        return options.index(answer)
    if not 0 <= number < len(options):
        raise RowProblem(f"answer number {number} outside 0..{len(options) - 1}")
    if options[number] != answer:
        raise RowProblem(f"answer number {number} is option {options[number]!r}, but the answer is {answer!r}")
    return number


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


def collect_json_lists(files: Mapping[str, Path], convert: Callable[[str, int, dict[str, Any]], QARecord]) -> Prepared:
    """Records from one JSON list per task (MVBench's and MLVU's per-task files, LongVideoBench's one
    file): ``convert(task, row number from 1, row)`` per row. Every file must exist (a task left
    out would change the benchmark's average without a word); a row that is not a JSON object, a
    bad row and a duplicate id, in any file, become RowErrors."""
    missing = sorted(str(path) for path in files.values() if not Path(path).is_file())
    if missing:
        raise RecordsError(missing[0], None, f"no such file ({len(missing)} of the {len(files)} task files are "
                           f"missing: {', '.join(Path(m).name for m in missing)})")

    def checked(task: str) -> Callable[[tuple[int, Any]], QARecord]:
        def convert_row(numbered: tuple[int, Any]) -> QARecord:
            number, row = numbered
            if not isinstance(row, dict):
                raise RowProblem(f"expected a JSON object, got {type(row).__name__}")
            return convert(task, number, row)
        return convert_row

    out, first = Prepared(), {}
    for task, path in files.items():
        part = collect(path, [(n, (n, row)) for n, row in read_json_rows(path)], checked(task))
        for rec in part.records:
            if rec.id in first:
                part.errors.append(RowError(str(path), 0, f"duplicate id {rec.id!r} (first in {first[rec.id]})"))
                continue
            first[rec.id] = str(path)
            out.records.append(rec)
        out.errors += part.errors
    return out


def options_list(row: dict[str, Any], name: str = "candidates", allow_empty: bool = False) -> list[str]:
    """A JSON list of at least two option strings (MVBench's, MLVU's and LongVideoBench's
    ``candidates``); numbers are kept as their text ("2" for a count). Empty options are refused
    unless ``allow_empty`` (MLVU ships a few, and its scorer shows them as they are)."""
    raw = row.get(name)
    if not isinstance(raw, list) or len(raw) < 2 or any(isinstance(o, (dict, list)) or o is None for o in raw):
        raise RowProblem(f"{name!r} must be a list of at least 2 options, got {raw!r}")
    options = [str(o) for o in raw]
    if not allow_empty and any(not o.strip() for o in options):
        raise RowProblem(f"{name!r} holds an empty option: {raw!r}")
    return options


def scorer_answer(row: dict[str, Any], options: list[str]) -> tuple[str, int | None, dict[str, str]]:
    """(answer, answer index, meta) as MVBench's and MLVU's ``qa_template`` sees a row: the index of
    the LAST candidate equal to the answer (its loop overwrites earlier matches), and, when no
    candidate equals it, no index: the scorer's letter becomes ``@`` and the question always counts
    wrong, so the record is kept (``answer_index`` None never matches) with a note for the report."""
    answer = row.get("answer")
    if not isinstance(answer, str):
        raise RowProblem(f"answer must be a string, got {answer!r}")
    matches = [i for i, o in enumerate(options) if o == answer]
    if matches:
        return answer, matches[-1], {}
    return answer, None, {"fixed": f"answer {answer!r} is none of the candidates: kept and always counted wrong, "
                                   "as the official scorer counts it"}
